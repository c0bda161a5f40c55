"""Every patch of ours to megatron-core or torch internals, the upstream versions it was written for, and the check
each patch site makes before patching. It decides and logs; it must not patch anything itself.

On an upgrade, each patch's `test` (tests/unit/test_upstream_patches.py) says whether upstream still has the behaviour
the patch relies on or works around. Where versions differ, a patch that is harmless on changed code is applied with a
warning (APPLY); a patch that repeats upstream code is left out, so upstream's own code runs (SKIP). No patch refuses
on a version alone: one whose target is gone refuses only where running without it would be wrong (`refuse_without`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import dataclass
from typing import Any, Optional

from megatron_sota.errors import MegatronSotaError

log = logging.getLogger(__name__)

APPLY = "apply"
SKIP = "skip"
TESTS = "tests/unit/test_upstream_patches.py"


@dataclass(frozen=True)
class Patch:
    name: str
    """Where the patch lives (module.function), as the warning names it."""
    written_for: tuple[tuple[str, str], ...]
    """(distribution, release) pairs; a release matches its own patch releases: "2.13" is any 2.13.x."""
    on_other_versions: str
    """APPLY or SKIP where an installed version differs from written_for (see the module docstring)."""
    test: str
    """The test in TESTS that fails once upstream no longer behaves as the patch expects."""
    targets: tuple[str, ...] = ()
    """Dotted paths of what the patch replaces or calls; one that is gone leaves the patch out."""
    refuse_without: Optional[str] = None
    """Set where running without the patch would be wrong: the setting that avoids needing it."""


FULLY_RESHARDABLE_STEP = Patch(
    "checkpointing.mcore_fixes.install_fully_reshardable_step_fix",
    (("megatron-core", "0.16.1"),),
    APPLY,  # it only acts where megatron-core would raise KeyError: 'step'
    "test_unpatched_reshardable_load_raises_key_error_step",
    ("megatron.core.optimizer.distrib_optimizer.DistributedOptimizer._set_main_param_and_optimizer_states",),
)
SHARED_ADAM_STEP = Patch(
    "checkpointing.mcore_fixes.unshare_adam_steps",
    (("megatron-core", "0.16.1"), ("torch", "2.13")),
    APPLY,  # a step tensor of each parameter's own holds the same value
    "test_loaded_adam_state_shares_one_step_tensor",
)
CPU_BACKEND = Patch(
    "runtime.cpu_compat.cpu_backend",
    (("megatron-core", "0.16.1"), ("torch", "2.13")),
    APPLY,  # CPU runs cannot start without it; a CUDA assumption it misses fails loudly
    "test_cuda_functions_replaced_on_cpu_keep_their_signatures",  # its targets: cpu_compat's stand-in table
)
TP_GROUP_WITHOUT_WARNING = Patch(
    "model.compile_layers._default_tp_group_without_warning",
    (("megatron-core", "0.16.1"), ("torch", "2.13")),
    SKIP,  # a copy of megatron-core's lookup: unpatched is slower (graph breaks on rank 0), never wrong
    "test_default_tp_group_lookup_still_warns_and_matches_our_substitute",
    ("megatron.core.utils.get_tensor_model_parallel_group_if_none",),
)
LOADER_WORKERS_AT_EXIT = Patch(
    "data.blend._stop_workers_at_exit",
    (("torch", "2.13"),),
    APPLY,  # calls a private method that stops the workers whatever its internals
    "test_dataloader_shutdown_workers_stops_workers_that_ignore_sigterm",
    ("torch.utils.data.dataloader._MultiProcessingDataLoaderIter._shutdown_workers",),
    refuse_without="data.num_workers=0 (loader workers ignore SIGTERM and would hang the process at exit)",
)
CPU_FLASH_ATTENTION = Patch(  # not a patch: a call of private ops, whose schemas may change without notice
    "model.fused_attention_block.fused_block_kernel",
    (("torch", "2.13"),),
    APPLY,  # a changed schema fails the call loudly, and the test below names it; a removed op leaves matmul blocks
    "test_cpu_flash_attention_ops_keep_the_schemas_we_call",
    (
        "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu",
        "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward",
    ),
)
CUDA_FUSED_ATTENTION = Patch(  # not a patch: calls of private ops, whose schemas and returns may change without notice
    "model.fused_attention_block._cuda_kernel",
    (("torch", "2.13"),),
    APPLY,  # a changed schema or return fails the call loudly, and the test below names it; a removed op: matmul blocks
    "test_cuda_fused_attention_ops_keep_the_schemas_we_call",
    (
        "torch.ops.aten._scaled_dot_product_flash_attention",
        "torch.ops.aten._scaled_dot_product_flash_attention_backward",
        "torch.ops.aten._scaled_dot_product_efficient_attention",
        "torch.ops.aten._scaled_dot_product_efficient_attention_backward",
    ),
)
FSDP_WITHOUT_TE = Patch(
    "parallelize.fsdp._te_linear_placeholder_as_a_type",
    (("megatron-core", "0.16.1"),),
    APPLY,  # only replaces a placeholder that is not a type; nothing is an instance of the class put there
    "test_fsdp_adapter_without_te_has_a_te_linear_placeholder_that_is_not_a_type",
    ("megatron.core.distributed.fsdp.mcore_fsdp_adapter.TELinear",),
    refuse_without="parallel.tp=1 or Transformer Engine installed (Megatron-FSDP at tp > 1 checks isinstance against it)",
)
TORCH_FSDP_DDP_HOOKS = Patch(  # a subclass, not a patch: it fills two hooks megatron-core's FSDP2 wrapper leaves out
    "parallelize.torch_fsdp.TorchFSDP",
    (("megatron-core", "0.16.1"),),
    APPLY,  # finish_grad_sync only accepts the argument upstream passes; scale_gradients does what DDP's does
    "test_fsdp2_wrapper_still_lacks_the_ddp_hooks_finalize_model_grads_calls",
    ("megatron.core.distributed.data_parallel_base._BaseDataParallel.finish_grad_sync",
     "megatron.core.distributed.data_parallel_base._BaseDataParallel.scale_gradients"),
)
FAKE_WORLD = Patch(
    "runtime.fake_world.fake_world",
    (("megatron-core", "0.16.1"), ("torch", "2.13")),
    APPLY,  # a rehearsal only; a call it misses fails loudly under the fake backend
    "test_fake_world_still_needs_its_new_group_and_all_gather_object_stand_ins",
    ("torch.testing._internal.distributed.fake_pg.FakeStore", "torch.distributed.new_group",
     "torch.distributed.all_gather_object", "megatron.core.parallel_state.create_group"),
)
PATCHES = (
    FULLY_RESHARDABLE_STEP, SHARED_ADAM_STEP, CPU_BACKEND, TP_GROUP_WITHOUT_WARNING, LOADER_WORKERS_AT_EXIT,
    CPU_FLASH_ATTENTION, CUDA_FUSED_ATTENTION, FSDP_WITHOUT_TE, TORCH_FSDP_DDP_HOOKS, FAKE_WORLD,
)

_warned: set[str] = set()


def installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def release_matches(installed: str, written_for: str) -> bool:
    """"2.13.0+cpu" matches "2.13"; "0.16.10" and "0.17.0" do not match "0.16.1"."""
    wanted = _release(written_for)
    return _release(installed)[: len(wanted)] == wanted


def version_differences(patch: Patch) -> list[str]:
    """"megatron-core 0.19.0 (written for 0.16.1)" for each installed version the patch was not written for."""
    differences = []
    for distribution, written_for in patch.written_for:
        installed = installed_version(distribution)
        if installed is None or not release_matches(installed, written_for):
            differences.append(f"{distribution} {installed or 'not installed'} (written for {written_for})")
    return differences


def resolves(path: str) -> bool:
    """Whether a dotted path (module, then attributes) names something that exists."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def applies(patch: Patch) -> bool:
    """Whether to apply `patch` here, logged once per patch and process where the answer is not a plain yes.

    False when one of its targets is gone (MegatronSotaError instead for a refuse_without patch) or
    when an installed version differs and the patch is SKIP.
    """
    gone = [path for path in patch.targets if not resolves(path)]
    versions = version_differences(patch)
    if gone and patch.refuse_without:
        raise MegatronSotaError(
            f"{patch.name}: expected upstream to have {', '.join(gone)}, found "
            f"{'; '.join(versions) or 'it missing'} without it; set {patch.refuse_without}"
        )
    if gone:
        _warn_once(patch, f"upstream no longer has {', '.join(gone)}, so it is left out")
        return False
    if versions:
        action = "applied anyway" if patch.on_other_versions == APPLY else "left out: upstream's code runs"
        _warn_once(patch, f"found {'; '.join(versions)}, {action}")
        return patch.on_other_versions == APPLY
    return True


def _warn_once(patch: Patch, what: str) -> None:
    if patch.name in _warned:
        return
    _warned.add(patch.name)
    log.warning(
        "patch %s: %s. %s::%s tells whether upstream still needs it.", patch.name, what, TESTS, patch.test
    )
