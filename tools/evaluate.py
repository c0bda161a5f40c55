"""CLI: evaluate a checkpoint on local tasks (multiple choice, exact match, perplexity, passkey, refusal, code; MMLU,
GPQA, AIME and HumanEval in their published formats).

  python tools/evaluate.py --load <checkpoint> --task arithmetic_mc --output report.json
  python tools/evaluate.py --load <checkpoint> --task my_mcq.jsonl --task-type multiple_choice --num-fewshot 5
  python tools/evaluate.py --load <checkpoint> --task data/valid_text_document --task-type perplexity --limit 200
  torchrun --nproc-per-node 2 tools/evaluate.py --load <checkpoint> --task arithmetic_mc     # TP=2
  python tools/evaluate.py --load <checkpoint> --task mmlu_sample_5shot --task humaneval_sample --chat

Exit code 3 when a task is below one of its thresholds. The command line lives in
megatron_sota/cli/evaluate.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
