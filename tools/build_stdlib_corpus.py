"""`python tools/build_stdlib_corpus.py --help`: the Python standard library as a JSONL corpus; the same command as `megatron-sota-build-stdlib-corpus`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/build_stdlib_corpus.py, in the installed package.
"""

import sys

from megatron_sota.cli.build_stdlib_corpus import main

if __name__ == "__main__":
    sys.exit(main())
