"""`python tools/inspect_data.py --help`: what a .bin/.idx pair holds, samples decoded, a validity report; the same command as `megatron-sota-inspect-data`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/inspect_data.py, in the installed package.
"""

import sys

from megatron_sota.cli.inspect_data import main

if __name__ == "__main__":
    sys.exit(main())
