"""CLI: SWE-bench predictions (JSONL) from a checkpoint, for the official harness to score.

  python tools/swebench_predictions.py --load <checkpoint> --instances instances.jsonl --output preds.jsonl
      [--model-name NAME] [--max-new-tokens N] [--limit N] [--batch-size B] [--chat [--chat-template T]]
  torchrun --nproc-per-node 2 tools/swebench_predictions.py --load <checkpoint> ...     # TP=2

The command line lives in megatron_sota/cli/swebench_predictions.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.swebench_predictions import main

if __name__ == "__main__":
    sys.exit(main())
