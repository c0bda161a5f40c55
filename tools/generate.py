"""CLI: generate text from a checkpoint.

  python tools/generate.py --load <checkpoint> --prompt "..." [--temperature T --top-p P --top-k K
      --repetition-penalty R --max-new-tokens N --seed S --stop STR --overflow keep_end|keep_start|error]
  python tools/generate.py --load <checkpoint> --prompt-file prompts.jsonl --output completions.jsonl [--batch-size 8]
  torchrun --nproc-per-node 2 tools/generate.py --load <checkpoint> --prompt "..."     # TP=2

A --prompt-file is generated --batch-size prompts at a time (left padded, output in input order).
The command line lives in megatron_sota/inference/generate_cli.py.
"""

from __future__ import annotations

import sys

from megatron_sota.inference.generate_cli import main

if __name__ == "__main__":
    sys.exit(main())
