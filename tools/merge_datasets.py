"""`python tools/merge_datasets.py --help`: merge .bin/.idx datasets into one; the same command as `megatron-sota-merge-datasets`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/merge_datasets.py, in the installed package.
"""

import sys

from megatron_sota.cli.merge_datasets import main

if __name__ == "__main__":
    sys.exit(main())
