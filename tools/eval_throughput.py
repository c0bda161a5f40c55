"""CLI: requests/s of lm-eval on a megatron_sota checkpoint (model "megatron_sota") against lm-eval's hf model on its export.

  python tools/eval_throughput.py --load <checkpoint> --hf <export> --tasks megatron_sota_mc_sample \
      --include-path examples/lm_eval [--batch-size 8] [--limit N] [--report throughput.json]

The command line lives in megatron_sota/cli/eval_throughput.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.eval_throughput import main

if __name__ == "__main__":
    sys.exit(main())
