"""`python tools/curate.py --help`: curate raw text for pretraining on datatrove; the same command as `megatron-sota-curate`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/curate.py, in the installed package.
"""

import sys

from megatron_sota.cli.curate import main

if __name__ == "__main__":
    sys.exit(main())
