"""CLI: constitutional AI, critique-and-revision SFT data and AI preference labels from a constitution of principles.

  python tools/cai.py critique --checkpoint <ckpt> --output sft.jsonl [--prompts p.jsonl] [--constitution c.yaml]
  python tools/cai.py label --judge <ckpt> --prompts comparisons.jsonl --output pairs.jsonl [--policy <ckpt>]

The command line lives in megatron_sota/cli/cai.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.cai import main

if __name__ == "__main__":
    sys.exit(main())
