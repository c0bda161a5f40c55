"""`python tools/rehearse.py --help`: build one rank of a training layout on this CPU and weigh it; the same command as
`megatron-sota-rehearse`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/rehearse.py, in the installed package.
"""

import sys

from megatron_sota.cli.rehearse import main

if __name__ == "__main__":
    sys.exit(main())
