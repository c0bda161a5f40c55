"""Runs `python -m megatron_sota.train` (or megatron_sota.posttrain, or a launcher around it) as a child process,
as a user would.

Only starts the command and returns its result; it must not check what the run did.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_train(
    args, run_dir, launcher=(sys.executable, "-m"), module: str = "megatron_sota.train"
) -> subprocess.CompletedProcess:
    """The finished command; a failed run prints the tails of its output for pytest to show."""
    command = [*launcher, module, *args, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-20000:], sep="\n")
    return result
