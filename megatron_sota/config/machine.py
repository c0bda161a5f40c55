"""What `auto` becomes on this machine (device, dtype, Transformer Engine), and what the config asks of it.

Cheap probes and pure decisions, made once before any process group so that every refusal can be
listed with the other config problems; it must not build models or start processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_sota.config.job import JobConfig


@dataclass(frozen=True)
class Machine:
    """The facts about this machine a run's choices depend on (tests pass made-up ones)."""

    cuda: bool
    transformer_engine: bool
    """Transformer Engine imports (only probed where CUDA is there to run it)."""


def transformer_engine_importable() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # TE raises more than ImportError when CUDA libraries are missing
        return False
    return True


def probe_machine(cfg: JobConfig) -> Machine:
    """The facts `cfg` needs: TE's slow import is tried only where CUDA is there and the model may use TE."""
    import torch

    cuda = torch.cuda.is_available()
    wants_te = cfg.model.transformer_impl != "local"
    return Machine(cuda=cuda, transformer_engine=cuda and wants_te and transformer_engine_importable())


def chosen_device(requested: str, cuda: bool) -> str:
    """runtime.device resolved: auto is cuda where torch sees a GPU, else cpu."""
    if requested == "auto":
        return "cuda" if cuda else "cpu"
    return requested


def device_problem(requested: str, cuda: bool) -> list[str]:
    if requested == "cuda" and not cuda:
        return ["runtime.device=cuda but torch sees no CUDA device (use runtime.device=cpu)"]
    return []


def chosen_dtype(requested: str, device: str) -> str:
    """precision.dtype resolved: auto is bf16 on a GPU, fp32 on CPU."""
    if requested == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return requested


@dataclass(frozen=True)
class MachineChoices:
    """What a run is built with on this machine; decided here, before any process group, and only here."""

    device: str
    """cpu or cuda."""
    dtype: str
    """fp32, bf16 or fp16."""
    transformer_engine: bool
    """Transformer Engine's layer spec (else megatron-core's local one with our SDPA attention and norm)."""


def machine_choices(cfg: JobConfig, machine: Machine) -> MachineChoices:
    device = chosen_device(cfg.runtime.device, machine.cuda)
    impl = cfg.model.transformer_impl
    use_te = impl == "transformer_engine" or (impl == "auto" and device == "cuda" and machine.transformer_engine)
    return MachineChoices(device=device, dtype=chosen_dtype(cfg.precision.dtype, device), transformer_engine=use_te)


def machine_problems(cfg: JobConfig, machine: Machine) -> list[str]:
    """What this config asks that this machine (or the layer spec it leads to) cannot give."""
    problems = device_problem(cfg.runtime.device, machine.cuda)
    choices = machine_choices(cfg, machine)
    if cfg.model.transformer_impl == "transformer_engine":
        if choices.device != "cuda":
            problems.append("model.transformer_impl=transformer_engine needs a CUDA device")
        elif not machine.transformer_engine:
            problems.append(
                "model.transformer_impl=transformer_engine needs Transformer Engine, which is not importable here "
                "(set model.transformer_impl=auto or local, or run in the NGC container)"
            )
    # fp8 needs TE actually running: asked for on a CPU it is not.
    te_runs = choices.transformer_engine and choices.device == "cuda" and machine.transformer_engine
    if cfg.precision.fp8 and not te_runs:
        problems.append(
            f"precision.fp8={cfg.precision.fp8} needs Transformer Engine, which is not importable here "
            "(set precision.fp8=null, or run in the NGC container on a GPU)"
        )
    # Context parallelism runs in either spec; the local one's (SDPA over all-gathered keys) has no attention dropout.
    if cfg.parallel.cp > 1 and not te_runs and cfg.model.attention_dropout > 0:
        problems.append(
            f"model.attention_dropout={cfg.model.attention_dropout} with parallel.cp={cfg.parallel.cp}: the local layer "
            "spec's context-parallel attention has no attention dropout (set model.attention_dropout=0, or use "
            "model.transformer_impl=transformer_engine)"
        )
    packing = cfg.posttrain is not None and cfg.posttrain.packing
    if choices.transformer_engine and (cfg.data.reset_attention_mask or packing):
        key = "data.reset_attention_mask" if cfg.data.reset_attention_mask else "posttrain.packing"
        problems.append(
            f"{key}=true needs the local layer spec's SDPA attention (document ids), but this run "
            "uses Transformer Engine's (set model.transformer_impl=local)"
        )
    if choices.transformer_engine:
        for key in ("rms_norm", "compile_layers"):
            if getattr(cfg.kernels, key):
                problems.append(
                    f"kernels.{key}=true applies to the local layer spec, but this run uses Transformer Engine's "
                    "(set model.transformer_impl=local, or leave the key null)"
                )
    return problems
