"""`python tools/compare_runs.py --help`: training losses of several runs side by side; the same command as `megatron-sota-compare-runs`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/compare_runs.py, in the installed package.
"""

import sys

from megatron_sota.cli.compare_runs import main

if __name__ == "__main__":
    sys.exit(main())
