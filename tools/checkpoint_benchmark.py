#!/usr/bin/env python
"""Times a checkpoint save and load of any preset on this machine, without training.

Builds the real training state (model, DDP, optimizer) for the preset, saves it through the
project's CheckpointManager and loads it back into a fresh state, printing size and times.

  python tools/checkpoint_benchmark.py --preset tiny
  python tools/checkpoint_benchmark.py --preset llama_1b3 --weights-only   # fits 24 GiB of RAM

A developer's script: it imports the installed megatron_sota (pip install -e . in a checkout).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="a file name in conf/model/")
    parser.add_argument("--weights-only", action="store_true", help="skip optimizer state (big models on small hosts)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory, removed after)")
    args = parser.parse_args()

    from megatron_sota.checkpointing.contents import prime_optimizer_state
    from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
    from megatron_sota.checkpointing.paths import dir_size_bytes, iter_dir
    from megatron_sota.config.job import JobConfig
    from megatron_sota.config.presets import load_model_preset
    from megatron_sota.runtime.session import distributed_session
    from megatron_sota.training.state import build_training_state, check_inputs

    job = JobConfig(model=load_model_preset(args.preset))
    job.data.mock = True
    job.train.iters = 1
    job.train.seq_length = 128
    job.checkpoint.load_optimizer = not args.weights_only
    job.runtime.device = "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        root = args.dir or scratch
        inputs = check_inputs(job, 1)
        with distributed_session(job.parallel, "cpu", 30, job.train.seed) as session:
            start = time.perf_counter()
            state = build_training_state(job, inputs, session, root)
            if not args.weights_only:
                prime_optimizer_state(state.optimizer)  # the moments a trained run would hold
            print(f"{args.preset}: built in {time.perf_counter() - start:.1f}s", flush=True)
            layout = checkpoint_layout(job.parallel, 1)
            manager = CheckpointManager(job.checkpoint, os.path.join(root, "checkpoints"))
            start = time.perf_counter()
            manager.save(state, Progress(1, 8), "", layout, include_optimizer=not args.weights_only)
            save_s = time.perf_counter() - start
            path = iter_dir(os.path.join(root, "checkpoints"), 1)
            size = dir_size_bytes(path)
            start = time.perf_counter()
            manager.load(state, path, layout)
            load_s = time.perf_counter() - start
            print(
                f"RESULT preset={args.preset} optimizer={'no' if args.weights_only else 'yes'} "
                f"size={size / 2**30:.3f} GiB save={save_s:.1f}s ({size / 2**20 / save_s:.0f} MiB/s) "
                f"load={load_s:.1f}s ({size / 2**20 / load_s:.0f} MiB/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
