"""CLI: serve a checkpoint over the OpenAI API (completions, chat completions, streaming, /metrics).

  python tools/serve.py --load <checkpoint> [--host 127.0.0.1 --port 8000 --served-model-name NAME
      --max-batch 8 --max-queue 64 --batch-wait-ms 5]

Then any OpenAI client: `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")`. The command line lives in
megatron_sota/serving/cli.py; the gateway (API keys, rate limits, cache, screens) is tools/gateway.py.
"""

from __future__ import annotations

import sys

from megatron_sota.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
