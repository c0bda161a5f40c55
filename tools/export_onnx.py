"""`python tools/export_onnx.py --help`: a Hugging Face Llama export to ONNX with a KV cache; the same command as `megatron-sota-export-onnx`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/export_onnx.py, in the installed package.
"""

import sys

from megatron_sota.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
