"""`python tools/serving_benchmark.py --help`: a bounded load test of an OpenAI-compatible server; the same command as `megatron-sota-serving-benchmark`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/serving_benchmark.py, in the installed package.
"""

import sys

from megatron_sota.cli.serving_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
