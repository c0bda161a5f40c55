"""`python tools/gateway.py --help`: the gateway (API keys, rate limits, cache, screens, metrics) in front of an OpenAI-compatible upstream; the same command as `megatron-sota-gateway`.

A wrapper with the Megatron-style name only; the command is megatron_sota/serving/gateway/cli.py, in the installed package.
"""

import sys

from megatron_sota.serving.gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
