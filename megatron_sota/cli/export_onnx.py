"""CLI: a Hugging Face Llama export -> an ONNX directory with KV-cache inputs/outputs, checked with onnxruntime on CPU.

Argument parsing and printing only (`megatron-sota-export-onnx`, tools/export_onnx.py); the work is
megatron_sota/conversion/onnx_export.py and onnx_verify.py:

  python tools/export_onnx.py --hf exports/tiny --save exports/tiny-onnx
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.conversion.onnx_export import DEFAULT_OPSET, check_inputs, export_onnx  # noqa: E402
from megatron_sota.conversion.onnx_verify import LOGIT_TOLERANCE, verify_onnx  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.export_onnx")  # not __name__: that is "__main__" under -m

DEFAULT_PROMPT = "def main():\n    "
VERIFY_STEPS = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", required=True, help="Hugging Face Llama directory (megatron-sota-convert export's --save)")
    parser.add_argument("--save", required=True, help="ONNX directory to write (model.onnx, model.onnx.data, onnx_io.json, tokenizer)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --save directory")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against transformers")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text whose prefill and greedy steps are compared")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def _prompt_ids(hf_dir: str, text: str) -> list[int]:
    if not os.path.isfile(os.path.join(hf_dir, "tokenizer.json")):
        raise MegatronSotaError(f"{hf_dir}/tokenizer.json is missing: the check needs the tokenizer (or pass --no-verify)")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(hf_dir).encode(text)
    if not ids:
        raise MegatronSotaError(f"--prompt {text!r}: encodes to no tokens")
    return ids


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        check_inputs(args.hf, args.save, args.overwrite)  # before the tokenizer, whose absence says less
        prompt = None if args.no_verify else _prompt_ids(args.hf, args.prompt)
        measured = export_onnx(args.hf, args.save, opset=args.opset, overwrite=args.overwrite)
        sizes = ", ".join(f"{name} {size / 2**20:.2f} MiB" for name, size in measured["bytes"].items())
        print(f"wrote {args.save} in {measured['seconds']:.1f} s: {sizes}")
        if prompt is None:
            return 0
        result = verify_onnx(args.save, args.hf, prompt, steps=VERIFY_STEPS)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    steps = " ".join(f"{d:.2e}" for d in result.max_diffs)
    print(f"onnxruntime vs transformers, prefill of {len(prompt)} tokens + {VERIFY_STEPS} cached steps: max |logit diff| per step {steps}")
    print(f"greedy tokens onnx {result.onnx_tokens}, transformers {result.torch_tokens}")
    if not result.passed:
        log.error("verification failed: max |logit diff| %.3g (tolerance %g), greedy tokens %s", max(result.max_diffs), LOGIT_TOLERANCE, "equal" if result.onnx_tokens == result.torch_tokens else "differ")
        return 1
    print(f"verified: max |logit diff| {max(result.max_diffs):.2e} <= {LOGIT_TOLERANCE:g}, greedy tokens equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
