"""`python tools/preprocess_data.py --help`: tokenize a corpus into megatron-core .bin/.idx shards (Megatron-LM's flags); the same command as `megatron-sota-preprocess`.

A wrapper with the Megatron-style name only; the command is megatron_sota/cli/preprocess_data.py, in the installed package.
"""

import sys

from megatron_sota.cli.preprocess_data import main

if __name__ == "__main__":
    sys.exit(main())
