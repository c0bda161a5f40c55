"""`python -m megatron_sota.lm_eval [every lm-eval flag]`: lm-eval's command line, with the model "megatron_sota" registered.

lm-eval's CLI finds only its own models; this registers ours, then runs lm-eval's entry point on the unchanged argv.
Under `torchrun --nproc-per-node N` each rank is one TP shard; only LOCAL_RANK 0 prints and writes results.
"""

import importlib

from megatron_sota.quiet import quiet_megatron

quiet_megatron()
importlib.import_module("megatron_sota.lm_eval.model")  # registers "megatron_sota" with lm-eval (its decorator)

from lm_eval.__main__ import cli_evaluate  # noqa: E402

if __name__ == "__main__":
    cli_evaluate()
