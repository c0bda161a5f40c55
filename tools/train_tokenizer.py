"""`python tools/train_tokenizer.py --help`: train a SentencePiece or Hugging Face BPE tokenizer; the same command as `megatron-sota-train-tokenizer`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/train_tokenizer.py, in the installed package.
"""

import sys

from megatron_sota.cli.train_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
