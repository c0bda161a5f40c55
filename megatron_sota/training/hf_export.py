"""In-training Hugging Face exports: rank 0 converts completed checkpoints in a background process.

The export reads the checkpoint from disk (layout-free, one layer at a time), so training goes
on while it runs and no rank gathers the model. The checkpoint it reads is pinned against
pruning until it finishes; a failed export is reported at the end of the run with its log.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import List

from megatron_sota.checkpointing import paths
from megatron_sota.errors import MegatronSotaError

logger = logging.getLogger(__name__)


def export_dir(save_dir: str, step: int) -> str:
    return os.path.join(save_dir, "hf", f"iter_{step:07d}")


@dataclass
class _Running:
    step: int
    process: subprocess.Popen
    log_path: str


class BackgroundExporter:
    def __init__(self, save_dir: str, every: int, dtype: str, pinned: set, is_rank0: bool):
        self.save_dir = save_dir
        self.every = every
        self.dtype = dtype
        self.pinned = pinned
        """The checkpoint manager's set of iterations pruning must keep."""
        self.is_rank0 = is_rank0
        self._running: List[_Running] = []
        self.failures: List[str] = []
        self.exported: List[str] = []

    def due(self, step: int, last: bool) -> bool:
        return self.every > 0 and (step % self.every == 0 or last)

    def start(self, step: int) -> None:
        """Exports iter_<step>/, which must be complete (saved and, if async, finalized)."""
        if not self.is_rank0:
            return
        out = export_dir(self.save_dir, step)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        command = [
            sys.executable, "-m", "megatron_sota.conversion.cli", "export",
            "--load", paths.iter_dir(self.save_dir, step), "--save", out,
            "--dtype", self.dtype, "--no-progress", "--overwrite",
        ]
        # CPU only: the export must not take GPU memory from training.
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        log_path = out + ".log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.pinned.add(step)
        self._running.append(_Running(step, process, log_path))
        logger.info(f"exporting iter_{step:07d} to {out} in the background (log: {log_path})")

    def poll(self, wait: bool = False) -> None:
        still = []
        for job in self._running:
            code = job.process.wait() if wait else job.process.poll()
            if code is None:
                still.append(job)
                continue
            self.pinned.discard(job.step)
            out = export_dir(self.save_dir, job.step)
            if code == 0:
                self.exported.append(out)
                logger.info(f"exported iter_{job.step:07d} to {out}")
            else:
                self.failures.append(f"iter_{job.step:07d} (exit code {code}; log {job.log_path}): {_last_line(job.log_path)}")
        self._running = still

    def close(self, wait: bool = True) -> None:
        """Waits for every export (or only reports the running ones); raises if any failed.

        A failed export leaves the checkpoint it read intact; rerun tools/convert_checkpoint.py on it.
        """
        self.poll(wait=wait)
        for job in self._running:
            logger.info(f"not waiting for the export of iter_{job.step:07d} (log: {job.log_path})")
        if self.failures:
            raise MegatronSotaError("Hugging Face export failed for " + "; ".join(self.failures))


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"
