"""CLI: quantise a Hugging Face export to int8 (torchao) and gate its perplexity against the source.

  python tools/quantize.py --hf <hf export> --save <int8 dir> [--scheme weight_only|dynamic] [--report report.json]
  python tools/quantize.py --hf <hf export> --save <int8 dir> --task my_docs.jsonl --max-ppl-increase 0.01

Exit code 3 when the int8 perplexity rose by more than --max-ppl-increase. The command line lives in
megatron_sota/cli/quantize.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.quantize import main

if __name__ == "__main__":
    sys.exit(main())
