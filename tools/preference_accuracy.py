"""CLI: held-out preference accuracy per task, from HF exports of a DPO policy and its reference, or of a reward model.

  python tools/preference_accuracy.py --policy <hf dir> --reference <hf dir> --files valid.jsonl [--beta 0.1] [--json]
  python tools/preference_accuracy.py --reward <hf dir> --files valid.jsonl [--json]

The command line lives in megatron_sota/cli/preference_accuracy.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.preference_accuracy import main

if __name__ == "__main__":
    sys.exit(main())
