"""lm-evaluation-harness interop: importing this package registers the lm-eval model "megatron_sota".

`import megatron_sota.lm_eval` then `lm_eval.simple_evaluate(model="megatron_sota", model_args="load=<checkpoint>", ...)`;
`python -m megatron_sota.lm_eval` is lm-eval's own command line with the model registered. Nothing here changes lm-eval.
"""

from megatron_sota.lm_eval.model import MegatronSotaLM


def close() -> None:
    """Closes the model lm-eval built from model="megatron_sota" (its process groups), if one is open: a later
    distributed session in this process (another model, a training run) can then start. Interpreter exit closes it too."""
    if MegatronSotaLM._open is not None:
        MegatronSotaLM._open.close()


__all__ = ["MegatronSotaLM", "close"]
