"""`python tools/plan.py --help`: rank parallel layouts of a model preset on a GPU cluster; the same command as `megatron-sota-plan`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/plan.py, in the installed package.
"""

import sys

from megatron_sota.cli.plan import main

if __name__ == "__main__":
    sys.exit(main())
