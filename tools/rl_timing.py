"""CLI: the share of each PPO/GRPO iteration spent generating, scoring and training, from a run's metrics.jsonl.

  python tools/rl_timing.py <run dir or metrics.jsonl> [--json]

The command line lives in megatron_sota/cli/rl_timing.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.rl_timing import main

if __name__ == "__main__":
    sys.exit(main())
