"""`python tools/benchmark.py --help`: time training steps: tokens/s, TFLOP/s, MFU, peak memory; the same command as `megatron-sota-benchmark`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/benchmark.py, in the installed package.
"""

import sys

from megatron_sota.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
