"""A process whose data loader workers are alive at exit (a crash's traceback holds the loader) ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CRASHING_SCRIPT = textwrap.dedent(
    """
    import torch
    from megatron_sota.data.blend import build_loader

    class Samples(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, index):
            return {"tokens": torch.full((8,), index)}

    iterator = build_loader(Samples(), 0, 2, 0, 1, num_workers=1)
    assert next(iterator)["tokens"].shape == (2, 8)
    raise RuntimeError("crash with the loader still alive")
    """
)


def test_crash_with_live_loader_workers_exits_instead_of_hanging():
    # Workers ignore SIGTERM (SLURM preemption); without the exit hook this hung forever in join().
    result = subprocess.run([sys.executable, "-c", CRASHING_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "crash with the loader still alive" in result.stderr
