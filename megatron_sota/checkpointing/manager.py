"""Saves and loads training checkpoints with megatron-core's dist_checkpointing (torch_dist format).

A save writes into iter_N.partial/ on every rank, and only when all ranks are done does rank 0
rename it to iter_N/ and then replace the tracker, so a checkpoint is never half-visible and a
crash mid-save leaves the previous one in charge; a save that fails (a full disk) is deleted and
reported as MegatronSotaError naming that previous checkpoint. Loading checks format, shapes and the pickled
metadata before any tensor is read, and reports problems as MegatronSotaError.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch.distributed as dist
from megatron.core import dist_checkpointing
from torch.distributed.checkpoint.api import CheckpointException

from megatron_sota.checkpointing import fsdp_state, paths
from megatron_sota.checkpointing.contents import (
    FORMAT,
    build_state_dict,
    load_model_state,
    model_key,
    model_sharded_state_dict,
    optimizer_kind,
    restore_rng,
    sharded_tensor_shapes,
    torch_optimizers,
    unwrap,
    written_tensor_bytes,
)
from megatron_sota.checkpointing.mcore_fixes import install_fully_reshardable_step_fix, unshare_adam_steps
from megatron_sota.checkpointing.safe_metadata import verify_checkpoint_metadata
from megatron_sota.checkpointing.storage import save_failure
from megatron_sota.config.run import CheckpointConfig
from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class Progress:
    iteration: int = 0
    consumed_samples: int = 0

    def as_dict(self) -> Dict[str, int]:
        return {"iteration": self.iteration, "consumed_samples": self.consumed_samples}


logger = logging.getLogger(__name__)


def _rank0() -> bool:
    return dist.get_rank() == 0


def resolve_resume(cfg: CheckpointConfig, save_dir: str) -> Optional[str]:
    """The checkpoint directory to resume from, or None for a fresh start."""
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        return paths.latest_complete(save_dir)
    return paths.resolve_checkpoint_dir(cfg.resume, "checkpoint.resume")


class CheckpointManager:
    """Owns one checkpoint directory for the life of a run."""

    def __init__(self, cfg: CheckpointConfig, save_dir: str, vocab_size: Optional[int] = None):
        self.cfg = cfg
        self.save_dir = save_dir
        self.vocab_size = vocab_size
        self.pinned: set = set()
        """Iterations that pruning must keep for now (an export is reading them)."""
        self.before_commit: List[Callable[[int], None]] = []
        """Called on every rank with the iteration once its shards are written, before the checkpoint
        is made visible (what a crash at that moment must not lose is tested through this)."""
        self.last_complete: Optional[str] = None
        install_fully_reshardable_step_fix()
        self._async_queue = None
        self._pending: Tuple[int, int] = (0, 0)
        """The step and expected bytes of the background save in flight (at most one), for its error."""
        if cfg.async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._async_queue = AsyncCallsQueue()
        if _rank0():
            for name in paths.remove_partials(save_dir):
                logger.info(f"removed {os.path.join(save_dir, name)} (a save that never completed)")
        dist.barrier()

    # ------------------------------------------------------------------ save
    def save(
        self, state, progress: Progress, config_yaml: str, layout: Dict[str, int], include_optimizer: bool = True
    ) -> None:
        """Writes iter_<step>/; `include_optimizer=False` writes the weights (and progress) only.

        A write that fails (here, or in the background for async saves) raises MegatronSotaError on the
        ranks that see it, saying why (a full disk by name) and which checkpoint a restart continues
        from; the tracker keeps naming that one.
        """
        self.wait_for_pending()
        step = progress.iteration
        start = time.perf_counter()
        state_dict = build_state_dict(
            state.models, state.optimizer, state.scheduler, progress.as_dict(), config_yaml, layout,
            is_loading=False, include_optimizer=include_optimizer, vocab_size=self.vocab_size,
        )
        partial, expected = self._create_partial(step, state_dict)
        try:
            request = dist_checkpointing.save(
                state_dict, partial, async_sharded_save=self._async_queue is not None, content_metadata=None
            )
            finalize = self._finalizer(step, partial, start)
            if request is None:
                finalize()
                return
        except MegatronSotaError:
            raise
        except (Exception, CheckpointException) as err:  # torch's CheckpointException is a BaseException
            raise self._failed(step, err, expected) from None
        request.add_finalize_fn(finalize)
        self._pending = (step, expected)
        self._async_queue.schedule_async_request(request)
        logger.info(f"checkpoint iter_{step:07d}: writing in the background")

    def _create_partial(self, step: int, state_dict: Dict[str, Any]) -> Tuple[str, int]:
        """Rank 0 (re)creates iter_<step>.partial/; every rank learns whether it could, and the bytes all ranks
        will write. One collective in place of a barrier, so a directory rank 0 cannot create stops every rank."""
        partial = paths.partial_dir(self.save_dir, step)
        problem = None
        if _rank0():
            try:
                shutil.rmtree(partial, ignore_errors=True)
                os.makedirs(partial)
            except OSError as err:
                problem = err
        shares: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shares, (problem, written_tensor_bytes(state_dict)))
        expected = sum(size for _, size in shares)
        if shares[0][0] is not None:
            raise self._failed(step, shares[0][0], expected)
        return partial, expected

    def _failed(self, step: int, err: BaseException, expected_bytes: int) -> MegatronSotaError:
        """Rank 0 deletes the incomplete iter_<step>.partial/; the error says why the save failed."""
        if _rank0():
            shutil.rmtree(paths.partial_dir(self.save_dir, step), ignore_errors=True)
        return save_failure(self.save_dir, step, err, expected_bytes)

    def _finalizer(self, step: int, partial: str, start: float) -> Callable[[], None]:
        def finalize() -> None:
            for hook in self.before_commit:
                hook(step)
            dist.barrier()  # every rank has written its shards
            final = paths.iter_dir(self.save_dir, step)
            if _rank0():
                # Re-saving an iteration (after resuming from an older one): move the old copy
                # aside rather than deleting it first, so a crash here never loses both.
                replaced = final + ".replaced"
                if os.path.exists(final):
                    os.rename(final, replaced)
                os.rename(partial, final)
                paths.write_tracker(self.save_dir, step)
                shutil.rmtree(replaced, ignore_errors=True)
                pruned = paths.prune(self.save_dir, self.cfg.keep, self.pinned)
                size = paths.dir_size_bytes(final)
                logger.info(
                    f"saved checkpoint {final} ({size / 2**20:.1f} MiB) in {time.perf_counter() - start:.2f}s"
                    + (f"; deleted iterations {pruned}" if pruned else "")
                )
            self.last_complete = final
            dist.barrier()

        return finalize

    def poll(self) -> None:
        """Completes background saves that have finished writing (call once per step)."""
        self._finalize_background(blocking=False)

    def wait_for_pending(self) -> None:
        self._finalize_background(blocking=True)

    def _finalize_background(self, blocking: bool) -> None:
        if self._async_queue is None:
            return
        try:
            self._async_queue.maybe_finalize_async_calls(blocking=blocking)
        except MegatronSotaError:
            raise
        except (Exception, CheckpointException) as err:  # a failed write is raised on every rank here
            step, expected = self._pending
            raise self._failed(step, err, expected) from None

    def close(self) -> None:
        self.wait_for_pending()
        if self._async_queue is not None:
            self._async_queue.close()

    # ------------------------------------------------------------------ load
    def load(
        self, state, checkpoint_dir: str, layout: Dict[str, int], weights_only: bool = False,
        fresh_keys: Callable[[List[str]], List[str]] = lambda keys: [],
    ) -> Progress:
        """Restores a run from `checkpoint_dir`; `weights_only` starts a new run from its weights at step 0,
        and then the model keys `fresh_keys` picks from a chunk's keys (an objective's own new weights, such
        as a reward head) that the checkpoint does not hold keep their current values instead of failing."""
        start = time.perf_counter()
        common = read_common(checkpoint_dir)
        same_layout = common.get("layout") == layout and not weights_only
        load_optimizer = self.cfg.load_optimizer and not weights_only
        saved_kind, current_kind = common.get("optimizer_kind"), optimizer_kind(state.optimizer)
        if load_optimizer and saved_kind == "none":
            raise MegatronSotaError(
                f"{checkpoint_dir} holds weights only (no optimizer state): set checkpoint.load_optimizer=false"
            )
        if load_optimizer and saved_kind != current_kind:
            raise MegatronSotaError(
                f"{checkpoint_dir} holds {saved_kind} optimizer state but this run uses the {current_kind} "
                f"optimizer (parallel.distributed_optimizer); megatron-core cannot convert between them: "
                "set checkpoint.load_optimizer=false to restart from the weights, or match the setting"
            )
        template = build_state_dict(
            state.models, state.optimizer, state.scheduler, {}, "", layout,
            is_loading=True, include_optimizer=load_optimizer, include_rng=same_layout,
        )
        kept = _keep_fresh(state.models, template, checkpoint_dir, fresh_keys) if weights_only else {}
        check_model_shapes(template, checkpoint_dir, len(state.models))
        try:
            loaded = dist_checkpointing.load(template, checkpoint_dir)
        except MegatronSotaError:
            raise
        except (Exception, CheckpointException) as err:  # torch's CheckpointException is a BaseException
            hint = (
                "; if only the optimizer state cannot be resharded to this layout, set "
                "checkpoint.load_optimizer=false to restart from the weights"
                if load_optimizer else ""
            )
            raise MegatronSotaError(f"{checkpoint_dir}: loading failed ({type(err).__name__}: {err}){hint}") from None
        load_model_state(state.models, _with_kept(loaded, kept))
        if load_optimizer:
            try:
                if fsdp_state.is_fsdp(state.models):
                    fsdp_state.load_optimizer(state.optimizer, state.models, loaded["optimizer"])
                else:
                    state.optimizer.load_state_dict(loaded["optimizer"])
            except Exception as err:
                raise MegatronSotaError(
                    f"{checkpoint_dir}: the optimizer state does not fit this run ({type(err).__name__}: {err}); "
                    "set checkpoint.load_optimizer=false to restart from the weights"
                ) from None
            unshare_adam_steps(torch_optimizers(state.optimizer))
            state.scheduler.load_state_dict(loaded["scheduler"])
        elif not fsdp_state.is_fsdp(state.models):  # FSDP loads the weights into its main copies directly
            # A bf16/fp16 run's optimizer keeps fp32 main copies made from the weights it was built with; without
            # this, its first step would write those back over the weights just loaded.
            state.optimizer.reload_model_params()
        if weights_only:
            logger.info(f"initialised the weights from {checkpoint_dir} in {time.perf_counter() - start:.2f}s; starting at step 0")
            return Progress()
        progress = Progress(**common["progress"])
        if not load_optimizer:
            # Fresh moments, but the LR schedule continues where the run was.
            state.scheduler.step(increment=progress.iteration)
        if same_layout:
            restore_rng(loaded["rng_state"])
        logger.info(
            f"resumed from {checkpoint_dir} at iteration {progress.iteration} "
            f"({progress.consumed_samples} samples consumed) in {time.perf_counter() - start:.2f}s"
            + ("" if same_layout else f"; resharded from layout {common.get('layout')} to {layout}")
            + ("" if load_optimizer else "; optimizer state not loaded (checkpoint.load_optimizer=false)")
        )
        self.last_complete = checkpoint_dir
        return progress


def _keep_fresh(
    models, template: Dict[str, Any], checkpoint_dir: str, fresh_keys: Callable[[List[str]], List[str]]
) -> Dict[str, Dict[str, Any]]:
    """Takes out of `template` the model keys `fresh_keys` names that the checkpoint does not hold, and returns
    {model key: {state key: the chunk's current value}} to load in their place."""
    stored = None
    kept: Dict[str, Dict[str, Any]] = {}
    for index, model in enumerate(models):
        key = model_key(index, len(models))
        chunk = template[key]
        names = [name for name in fresh_keys(list(chunk)) if name in chunk]
        if not names:
            continue
        if stored is None:
            stored = set(dist_checkpointing.load_tensors_metadata(checkpoint_dir))
        current = fsdp_state.whole_weights(model) if fsdp_state.is_fsdp(models) else unwrap(model).state_dict()
        missing = [name for name in names if chunk[name].key not in stored]
        if not missing:
            continue
        kept[key] = {name: current[name] for name in missing}
        for name in missing:
            del chunk[name]
    if kept:
        fresh = sorted({name for names in kept.values() for name in names})
        logger.info(f"{checkpoint_dir} does not hold {', '.join(fresh)}: initialised here instead")
    return kept


def read_common(checkpoint_dir: str) -> Dict[str, Any]:
    """The checkpoint's non-tensor part (format, progress, config, layout), after checking its metadata is safe."""
    verify_checkpoint_metadata(checkpoint_dir)
    try:
        common = dist_checkpointing.load_common_state_dict(checkpoint_dir)
    except Exception as err:
        raise MegatronSotaError(f"{checkpoint_dir}/common.pt could not be read: {err}") from None
    if not isinstance(common, dict) or common.get("format") != FORMAT:
        found = common.get("format") if isinstance(common, dict) else type(common).__name__
        raise MegatronSotaError(
            f"{checkpoint_dir}: not a megatron_sota checkpoint (expected format {FORMAT!r}, found {found!r})"
        )
    return common


def check_model_shapes(template: Dict[str, Any], checkpoint_dir: str, num_chunks: int) -> None:
    model_keys = [model_key(i, num_chunks) for i in range(num_chunks)]
    expected = sharded_tensor_shapes({key: template[key] for key in model_keys})
    try:
        stored = {k: tuple(v.global_shape) for k, v in dist_checkpointing.load_tensors_metadata(checkpoint_dir).items()}
    except Exception as err:
        raise MegatronSotaError(f"{checkpoint_dir}: tensor metadata unreadable ({err})") from None
    problems = []
    for key, shape in sorted(expected.items()):
        if key not in stored:
            problems.append(f"{key}: missing from the checkpoint (model expects {list(shape)})")
        elif stored[key] != shape:
            problems.append(f"{key}: checkpoint {list(stored[key])}, model {list(shape)}")
    if problems:
        raise MegatronSotaError(
            f"{checkpoint_dir} does not fit the configured model:\n  - " + "\n  - ".join(problems[:10])
            + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        )


def load_model_weights(
    models, checkpoint_dir: str, fresh_keys: Callable[[List[str]], List[str]] = lambda keys: []
) -> Dict[str, Any]:
    """Loads only the weights of `checkpoint_dir` into `models` (any layout; collective over all ranks); keys
    `fresh_keys` picks that the checkpoint lacks keep their values (as in CheckpointManager.load). An optimizer
    built over `models` must then be told (reload_model_params)."""
    common = read_common(checkpoint_dir)
    template = model_sharded_state_dict(models)
    kept = _keep_fresh(models, template, checkpoint_dir, fresh_keys)
    check_model_shapes(template, checkpoint_dir, len(models))
    try:
        loaded = dist_checkpointing.load(template, checkpoint_dir)
    except (Exception, CheckpointException) as err:
        raise MegatronSotaError(f"{checkpoint_dir}: loading the weights failed ({type(err).__name__}: {err})") from None
    load_model_state(models, _with_kept(loaded, kept))
    return common


def _with_kept(loaded: Dict[str, Any], kept: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    return {**loaded, **{key: {**loaded[key], **values} for key, values in kept.items()}}


def checkpoint_layout(parallel, dp: int) -> Dict[str, int]:
    """What must match for RNG streams to be restored (weights and optimizer reshard regardless)."""
    return {"tp": parallel.tp, "pp": parallel.pp, "vpp": parallel.vpp or 1, "dp": dp, "cp": parallel.cp}

