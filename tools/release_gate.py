"""CLI: judge a run's checkpoint against a release gate (tasks with thresholds, the safety task included).

  python tools/release_gate.py examples/release_gate.yaml --load outputs/run/checkpoints --output-dir gate/
  python tools/release_gate.py gate.yaml --load ckpts --iterations all --limit 100        # plot every saved iteration
  torchrun --nproc-per-node 2 tools/release_gate.py gate.yaml --load ckpts               # TP=2

Exit code 3 when a check fails (each one named), 1 on an error. The command line lives in
megatron_sota/cli/release_gate.py.
"""

from __future__ import annotations

import sys

from megatron_sota.cli.release_gate import main

if __name__ == "__main__":
    sys.exit(main())
