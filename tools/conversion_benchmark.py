#!/usr/bin/env python
"""Times Hugging Face import and export of any preset and reports each one's peak memory beside the model size.

Writes a random-weight Llama directory of the preset's shape (streamed, so building it needs
little memory), imports it with the installed megatron-sota-convert, exports the checkpoint back and
checks the export equals the input. Import and export each run in their own process, measured by
/usr/bin/time (peak RSS of the process and, for import, of its largest rank).

  python tools/conversion_benchmark.py --preset llama_1b3 --dtype bf16 --max-shard-size 1GB

A developer's script: it imports the installed megatron_sota (pip install -e . in a checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch


def write_random_hf(preset: str, out_dir: str, dtype: str, max_shard: str) -> int:
    from megatron_sota.config.presets import load_model_preset
    from megatron_sota.conversion import llama_mapping as names
    from megatron_sota.conversion.hf_config import hf_config_from_model
    from megatron_sota.conversion.safetensors_files import StreamingSafetensorsWriter, parse_size

    model = load_model_preset(preset)
    shapes = names.hf_shapes(model, model.vocab_size)
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    os.makedirs(out_dir)
    writer = StreamingSafetensorsWriter(out_dir, shapes, torch_dtype, parse_size(max_shard))
    generator = torch.Generator().manual_seed(0)
    for name, shape in shapes.items():
        writer.write(name, torch.randn(shape, generator=generator, dtype=torch.float32).mul_(0.02).to(torch_dtype))
    writer.finish()
    config = hf_config_from_model(model, model.vocab_size, dtype, {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None})
    with open(os.path.join(out_dir, "config.json"), "w") as handle:
        json.dump(config, handle)
    return sum(torch.Size(shape).numel() for shape in shapes.values())


def timed(command: list) -> tuple:
    """(seconds, peak RSS in GiB over the process and its waited-for children) of one command."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M", *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    peak_kb = int(re.search(r"MAXRSS_KB=(\d+)", result.stderr).group(1))
    return seconds, peak_kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="a file name in conf/model/")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--max-shard-size", default="1GB")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one, removed after)")
    args = parser.parse_args()

    tool = [sys.executable, "-m", "megatron_sota.conversion.cli"]  # megatron-sota-convert, in this interpreter
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        source, checkpoint, exported = (os.path.join(root, name) for name in ("hf_in", "ckpt", "hf_out"))
        num_params = write_random_hf(args.preset, source, args.dtype, args.max_shard_size)
        model_gib = num_params * torch.empty((), dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]).element_size() / 2**30
        import_s, import_gib = timed([*tool, "import", "--load", source, "--save", checkpoint, "--dtype", args.dtype,
                                      "--tp", str(args.tp), "--pp", str(args.pp)])
        export_s, export_gib = timed([*tool, "export", "--load", checkpoint, "--save", exported, "--dtype", args.dtype,
                                      "--max-shard-size", args.max_shard_size, "--no-progress"])
        identical = subprocess.run(["bash", "-c", f"cd {source} && for f in *.safetensors; do cmp -s $f {exported}/$f || exit 1; done"]).returncode == 0
        baseline_s, baseline_gib = timed([sys.executable, "-c", "import torch, megatron.core"])
    print(f"{args.preset}: {num_params:,} parameters, {model_gib:.2f} GiB of {args.dtype} weights, shards of {args.max_shard_size}")
    print(f"{'step':<32}{'seconds':>10}{'peak RSS GiB':>14}")
    print(f"{'python + torch + megatron import':<32}{baseline_s:>10.1f}{baseline_gib:>14.2f}")
    print(f"{f'import (tp={args.tp}, pp={args.pp})':<32}{import_s:>10.1f}{import_gib:>14.2f}")
    print(f"{'export':<32}{export_s:>10.1f}{export_gib:>14.2f}")
    print(f"exported weight files byte-identical to the input: {identical}")


if __name__ == "__main__":
    main()
