"""CLI: held-out DPO preference accuracy per task, from HF exports of the policy and its reference.

  python tools/preference_accuracy.py --policy <hf dir> --reference <hf dir> --files valid.jsonl [--beta 0.1] [--json]

The command line lives in megatron_sota/posttrain/preference_accuracy.py.
"""

from __future__ import annotations

import sys

from megatron_sota.posttrain.preference_accuracy import main

if __name__ == "__main__":
    sys.exit(main())
