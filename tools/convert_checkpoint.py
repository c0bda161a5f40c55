"""CLI: convert checkpoints to and from Hugging Face Llama format.

  python tools/convert_checkpoint.py export --load <checkpoint dir or iter dir> --save <hf dir> [--dtype bf16|fp32]
  python tools/convert_checkpoint.py import --load <hf dir> --save <checkpoint dir> --tp N --pp N

The command line lives in megatron_sota/conversion/cli.py (the trainer's in-training export runs it too).
"""

from __future__ import annotations

import sys

from megatron_sota.conversion.cli import main

if __name__ == "__main__":
    sys.exit(main())
