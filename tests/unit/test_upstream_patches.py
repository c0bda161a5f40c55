"""Upstream still behaves as each of our patches of megatron-core and torch internals expects (runtime/upstream.py).

Each test is the `test` of one Patch. One failing after an upgrade means upstream changed what that patch relies on
or works around: revisit the patch it names (drop it where upstream fixed the problem) and its versions there.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import warnings

import pytest
import torch

from megatron_sota.checkpointing.contents import torch_optimizers
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.runtime import cpu_compat, upstream

STEP_FIX, SHARED_STEP = upstream.FULLY_RESHARDABLE_STEP, upstream.SHARED_ADAM_STEP


@contextlib.contextmanager
def _one_rank():
    from megatron_sota.runtime.session import distributed_session

    with distributed_session(ParallelConfig(), "cpu", 1, seed=0) as session:
        yield session


def _distributed_adam():
    """A Linear layer under megatron-core's DDP and distributed optimizer (torch AdamW without apex/TE)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.transformer import TransformerConfig

    module = torch.nn.Linear(8, 4)
    ddp = DistributedDataParallel(
        TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=1),
        DistributedDataParallelConfig(use_distributed_optimizer=True),
        module,
    )
    optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, use_distributed_optimizer=True), [ddp])
    return module, ddp, optimizer


def _sharded_state(module, optimizer, is_loading: bool) -> dict:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    from megatron_sota.checkpointing.contents import OPTIMIZER_METADATA, prime_optimizer_state

    model = {name: ShardedTensor.from_rank_offsets(f"linear.{name}", p, replica_id=0) for name, p in module.named_parameters()}
    if is_loading:
        prime_optimizer_state(optimizer)  # as CheckpointManager.load does
    return {"model": model, "optimizer": optimizer.sharded_state_dict(model, is_loading=is_loading, metadata=OPTIMIZER_METADATA)}


def _adam_states(optimizer) -> list[dict]:
    return [state for inner in torch_optimizers(optimizer) for state in inner.state.values()]


@pytest.fixture(scope="module")
def reshardable_round_trip(tmp_path_factory):
    """One AdamW step saved in the fully_reshardable format, loaded unpatched and patched, as our manager does."""
    from megatron.core import dist_checkpointing
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    from megatron_sota.checkpointing.mcore_fixes import install_fully_reshardable_step_fix

    directory = str(tmp_path_factory.mktemp("reshardable"))
    name = "_set_main_param_and_optimizer_states"
    with _one_rank():
        module, ddp, optimizer = _distributed_adam()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        ddp(torch.randn(3, 8)).sum().backward()
        ddp.finish_grad_sync()
        assert optimizer.step()[0]
        saved = [{k: v.clone() for k, v in state.items()} for state in _adam_states(optimizer)]
        dist_checkpointing.save(_sharded_state(module, optimizer, False), directory)

        unpatched_error = None
        current = getattr(DistributedOptimizer, name)
        with pytest.MonkeyPatch.context() as patch:
            # The fix is process-wide once a CheckpointManager exists: take megatron-core's own method.
            patch.setattr(DistributedOptimizer, name, getattr(current, "__wrapped__", current))
            module, _, fresh = _distributed_adam()
            loaded = dist_checkpointing.load(_sharded_state(module, fresh, True), directory)
            try:
                fresh.load_state_dict(loaded["optimizer"])
            except KeyError as err:
                unpatched_error = err

        install_fully_reshardable_step_fix()
        module, _, fresh = _distributed_adam()
        fresh.load_state_dict(dist_checkpointing.load(_sharded_state(module, fresh, True), directory)["optimizer"])
    return {"saved": saved, "unpatched_error": unpatched_error, "loaded": fresh}


def test_unpatched_reshardable_load_raises_key_error_step(reshardable_round_trip):
    error = reshardable_round_trip["unpatched_error"]
    assert error is not None and error.args == ("step",), (
        f"megatron-core now loads torch AdamW state in the fully_reshardable format without KeyError: 'step' "
        f"(got {error!r}): drop {STEP_FIX.name}"
    )
    # What the fix is for: the patched load restores every state tensor.
    loaded = _adam_states(reshardable_round_trip["loaded"])
    assert len(loaded) == len(reshardable_round_trip["saved"]) == 2
    for before, after in zip(reshardable_round_trip["saved"], loaded):
        assert set(after) == set(before) == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(after[key], before[key]) for key in before)


def test_loaded_adam_state_shares_one_step_tensor(reshardable_round_trip):
    from megatron_sota.checkpointing.mcore_fixes import unshare_adam_steps

    optimizer = reshardable_round_trip["loaded"]
    steps = [state["step"] for state in _adam_states(optimizer)]
    assert len(steps) == 2 and steps[0] is steps[1], (
        f"megatron-core now gives each parameter its own AdamW step tensor after a load: drop {SHARED_STEP.name}"
    )
    # What the fix does: one counter per parameter, same value, so in-place increments stay per parameter.
    unshare_adam_steps(torch_optimizers(optimizer))
    steps = [state["step"] for state in _adam_states(optimizer)]
    assert steps[0] is not steps[1] and all(torch.equal(step, steps[0]) for step in steps)


def _takes_any_arguments(function) -> bool:
    kinds = {p.kind for p in inspect.signature(function).parameters.values()}
    return {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds


def test_cuda_functions_replaced_on_cpu_keep_their_signatures():
    where = upstream.CPU_BACKEND.name
    stand_ins = cpu_compat._cuda_stand_ins()
    for (owner, name), stand_in in stand_ins.items():
        original = getattr(owner, name, None)
        assert original is not None, f"{owner.__name__}.{name} is gone upstream: drop its stand-in in {where}"
        if inspect.isclass(stand_in) or _takes_any_arguments(stand_in):
            continue
        expected = list(inspect.signature(original).parameters)
        assert list(inspect.signature(stand_in).parameters) == expected, f"{owner.__name__}.{name}: revisit {where}"


def test_megatron_core_optimizers_still_dispatch_on_cuda_type_names(monkeypatch):
    """cpu_backend answers Tensor.type() with CUDA names because megatron-core's optimizers compare those strings."""
    error = None
    with _one_rank():
        monkeypatch.setattr(cpu_compat, "_CUDA_TYPE_NAMES", {})  # CPU type names, as without the patch
        try:
            _distributed_adam()
        except TypeError as err:
            error = err
    assert error is not None and "Received torch.FloatTensor" in str(error), (
        f"megatron-core's optimizers accept CPU type names now ({error!r}): drop the Tensor.type() answer "
        f"in {upstream.CPU_BACKEND.name}"
    )


def test_torch_function_mode_still_sees_what_cpu_backend_redirects():
    seen = []

    class Recorder(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append((func, sorted(kwargs or {})))
            return args[0] if func is torch.Tensor.cuda else func(*args, **(kwargs or {}))

    x = torch.zeros(2)
    with Recorder():
        torch.ones(2, device="cpu")
        x.type()
        x.cuda()
        x.to("cpu")
    assert seen == [
        (torch.ones, ["device"]),
        (torch.Tensor.type, []),
        (torch.Tensor.cuda, []),
        (torch.Tensor.to, []),
    ], f"torch's TorchFunctionMode no longer sees these calls as before: revisit {upstream.CPU_BACKEND.name}"


def test_default_tp_group_lookup_still_warns_and_matches_our_substitute():
    from megatron.core import parallel_state
    from megatron.core.utils import get_tensor_model_parallel_group_if_none as upstream_lookup

    from megatron_sota.model.compile_layers import _default_tp_group_without_warning as ours

    where = upstream.TP_GROUP_WITHOUT_WARNING.name
    assert inspect.signature(ours) == inspect.signature(upstream_lookup), f"the signature changed: revisit {where}"
    assert upstream_lookup(None) is ours(None) is None  # no process group
    with _one_rank():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            group = upstream_lookup(None)
        assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning) and "tp_group is None" in str(w.message)], (
            f"megatron-core no longer warns when tp_group is None: drop {where}"
        )
        other = parallel_state.get_data_parallel_group()
        for args in ((None,), (other,), (None, True), (None, False, False)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert upstream_lookup(*args) is ours(*args), f"lookup{args} differs: revisit {where}"
        assert group is parallel_state.get_tensor_model_parallel_group()


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, index):
        return {"tokens": torch.full((4,), index)}


def test_dataloader_shutdown_workers_stops_workers_that_ignore_sigterm():
    from megatron_sota.data.blend import build_loader

    iterator = build_loader(_Samples(), 0, 2, 0, 1, num_workers=1)
    assert next(iterator)["tokens"].shape == (2, 4)
    workers = list(iterator._workers)
    try:
        assert workers and all(w.is_alive() for w in workers)
        os.kill(workers[0].pid, signal.SIGTERM)  # ignored: the reason _shutdown_workers is needed at exit
        workers[0].join(0.5)
        assert workers[0].is_alive()
        iterator._shutdown_workers()
        assert not any(w.is_alive() for w in workers), (
            f"torch's _shutdown_workers no longer stops the workers: revisit {upstream.LOADER_WORKERS_AT_EXIT.name}"
        )
    finally:
        if any(w.is_alive() for w in workers):  # else this failure would hang the test process at exit
            torch.utils.data._utils.signal_handling._remove_worker_pids(id(iterator))  # no SIGCHLD error for them
            for worker in workers:
                worker.kill()
                worker.join()


def _assert_schemas(expected: dict, patch) -> None:
    """Each op's schema is exactly `aten::<name><arguments>`, else the declaration `patch` needs revisiting."""
    for op, arguments in expected.items():
        schema = str(op._schema)
        assert schema == f"aten::{op._schema.name.split('::')[1]}{arguments}", f"{schema}: revisit {patch.name}"


def test_cpu_flash_attention_ops_keep_the_schemas_we_call():
    """fused_attention_block calls these private ops positionally: a reordered or new argument would be misread."""
    ops = torch.ops.aten
    expected = {
        ops._scaled_dot_product_flash_attention_for_cpu.default: (
            "(Tensor query, Tensor key, Tensor value, float dropout_p=0., bool is_causal=False, *, "
            "Tensor? attn_mask=None, float? scale=None) -> (Tensor output, Tensor logsumexp)"
        ),
        ops._scaled_dot_product_flash_attention_for_cpu_backward.default: (
            "(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor out, Tensor logsumexp, float dropout_p, "
            "bool is_causal, *, Tensor? attn_mask=None, float? scale=None) -> "
            "(Tensor grad_query, Tensor grad_key, Tensor grad_value)"
        ),
    }
    _assert_schemas(expected, upstream.CPU_FLASH_ATTENTION)


def test_cuda_fused_attention_ops_keep_the_schemas_we_call():
    """fused_attention_block calls these CUDA ops positionally (tests/unit/test_fused_attention_block_cuda_ops.py runs
    that code on meta tensors): a reordered argument of the same type would be misread without failing there."""
    ops = torch.ops.aten
    expected = {
        ops._scaled_dot_product_flash_attention.default: (
            "(Tensor query, Tensor key, Tensor value, float dropout_p=0., bool is_causal=False, "
            "bool return_debug_mask=False, *, float? scale=None) -> (Tensor output, Tensor logsumexp, "
            "Tensor cum_seq_q, Tensor cum_seq_k, SymInt max_q, SymInt max_k, Tensor rng_state, Tensor unused, "
            "Tensor debug_attn_mask)"
        ),
        ops._scaled_dot_product_flash_attention_backward.default: (
            "(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor out, Tensor logsumexp, "
            "Tensor cum_seq_q, Tensor cum_seq_k, SymInt max_q, SymInt max_k, float dropout_p, bool is_causal, "
            "Tensor philox_seed, Tensor philox_offset, *, float? scale=None) -> "
            "(Tensor grad_query, Tensor grad_key, Tensor grad_value)"
        ),
        ops._scaled_dot_product_efficient_attention.default: (
            "(Tensor query, Tensor key, Tensor value, Tensor? attn_bias, bool compute_log_sumexp, "
            "float dropout_p=0., bool is_causal=False, *, float? scale=None) -> "
            "(Tensor output, Tensor log_sumexp, Tensor philox_seed, Tensor philox_offset)"
        ),
        ops._scaled_dot_product_efficient_attention_backward.default: (
            "(Tensor grad_out_, Tensor query, Tensor key, Tensor value, Tensor attn_bias, Tensor out, "
            "Tensor logsumexp, Tensor philox_seed, Tensor philox_offset, float dropout_p, bool[4] grad_input_mask, "
            "bool is_causal=False, *, float? scale=None) -> (Tensor, Tensor, Tensor, Tensor)"
        ),
    }
    _assert_schemas(expected, upstream.CUDA_FUSED_ATTENTION)


def test_fsdp_adapter_without_te_has_a_te_linear_placeholder_that_is_not_a_type():
    """Megatron-FSDP's adapter asks isinstance(module, (TELinear,)) at tp > 1; without Transformer Engine megatron-core
    0.16.1 puts a non-type there, which raises. Once upstream stops doing so, parallelize/fsdp.py's patch can go."""
    import megatron.core.distributed.fsdp.mcore_fsdp_adapter as adapter
    from megatron.core.extensions import transformer_engine

    placeholder = transformer_engine.TELinear  # what the adapter imported, before any patch of ours
    with pytest.raises(TypeError):
        isinstance(torch.nn.Linear(1, 1), (placeholder,))
    assert adapter.TELinear is placeholder or isinstance(adapter.TELinear, type)


def test_megatron_fsdp_still_spells_its_default_device_from_the_current_device_index():
    """runtime/cpu_compat.indexed_current_device exists because Megatron-FSDP formats torch.cuda.current_device()
    into a "cuda:<index>" string; if upstream stops doing that, the context (and its use) can go."""
    from megatron.core.distributed.fsdp.src.megatron_fsdp import megatron_fsdp

    source = inspect.getsource(megatron_fsdp.MegatronFSDP.__init__)
    assert 'f"cuda:{torch.cuda.current_device()}"' in source
    with cpu_compat.cpu_backend():
        with pytest.raises(RuntimeError):
            torch.device(f"cuda:{torch.cuda.current_device()}")
        with cpu_compat.indexed_current_device():
            assert torch.device(f"cuda:{torch.cuda.current_device()}") == torch.device("cuda:0")
        assert torch.cuda.current_device() == torch.device("cpu")


def test_fsdp2_wrapper_still_lacks_the_ddp_hooks_finalize_model_grads_calls():
    """parallelize/torch_fsdp.TorchFSDP adds finish_grad_sync(force_all_reduce) and a real scale_gradients to
    megatron-core's FSDP2 wrapper, because finalize_model_grads calls both and the wrapper's base class accepts no
    argument and scales nothing. Once upstream has them, the subclass can go."""
    from megatron.core.distributed import finalize_model_grads as finalize
    from megatron.core.distributed.data_parallel_base import _BaseDataParallel
    from megatron.core.distributed.torch_fully_sharded_data_parallel import TorchFullyShardedDataParallel

    assert TorchFullyShardedDataParallel.finish_grad_sync is _BaseDataParallel.finish_grad_sync
    assert "force_all_reduce" not in inspect.signature(_BaseDataParallel.finish_grad_sync).parameters
    assert "finish_grad_sync(force_all_reduce=" in inspect.getsource(finalize)
    assert TorchFullyShardedDataParallel.scale_gradients is _BaseDataParallel.scale_gradients
    body = inspect.getsource(_BaseDataParallel.scale_gradients).split('"""')[-1]
    assert body.strip() == "pass"


def test_fsdp2_wrapper_still_asks_for_a_cuda_device_mesh():
    """runtime/cpu_compat.cpu_device_mesh exists because megatron-core's FSDP2 wrapper builds its mesh as "cuda"."""
    from megatron.core.distributed import torch_fully_sharded_data_parallel as wrapper

    assert 'DeviceMesh.from_group(self.process_group, "cuda")' in inspect.getsource(wrapper.TorchFullyShardedDataParallel)


def test_fake_world_still_needs_its_new_group_and_all_gather_object_stand_ins():
    """megatron-core still asks for gloo groups, which a fake default group cannot create, and all_gather_object
    still cannot carry an object through meta tensors: runtime/fake_world.py's two stand-ins are still needed."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    from megatron_sota.runtime.fake_world import _fake_store, fake_world

    where = upstream.FAKE_WORLD.name
    assert 'backend="gloo"' in inspect.getsource(parallel_state.initialize_model_parallel), (
        f"megatron-core no longer asks for gloo groups: {where} may not need its new_group stand-in"
    )
    real_gather = dist.all_gather_object
    dist.init_process_group("fake", store=_fake_store(), rank=1, world_size=4)
    try:
        with pytest.raises(RuntimeError):
            dist.new_group([0, 1], backend="gloo")
    finally:
        dist.destroy_process_group()
    with fake_world(4, 1):
        assert dist.new_group([0, 1], backend="gloo") is not None  # the stand-in drops the backend
        with pytest.raises(RuntimeError, match="meta"):
            real_gather([None] * 4, {"key": 1})
        gathered = [None] * 4
        dist.all_gather_object(gathered, {"key": 1})
        assert gathered == [{"key": 1}] * 4
    assert dist.all_gather_object is real_gather and not dist.is_initialized()


def _one_adam_step(x: torch.Tensor):
    """Fresh seeded _distributed_adam, one step on x; returns its parameters after the step."""
    torch.manual_seed(0)
    module, ddp, optimizer = _distributed_adam()
    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    ddp(x).sum().backward()
    ddp.finish_grad_sync()
    assert optimizer.step()[0]
    return [p.detach().clone() for p in module.parameters()]


def test_one_rank_buffer_collectives_are_megatron_core_globals_and_skipping_them_changes_nothing(monkeypatch):
    """cpu_backend skips the distributed optimizer's one-rank self-copies: megatron-core must still call its module's
    dist_all_gather_func / dist_reduce_scatter_func, and the step with the skip must equal the step with gloo's copy."""
    import megatron.core.distributed.param_and_grad_buffer as buffers

    names = ("dist_all_gather_func", "dist_reduce_scatter_func")
    real = {"dist_all_gather_func": torch.distributed.all_gather_into_tensor,
            "dist_reduce_scatter_func": torch.distributed.reduce_scatter_tensor}
    calls, gloo = [], []
    x = torch.randn(3, 8)
    for name in names:  # cpu_backend's stand-ins call what it finds on entry: these record gloo's calls
        monkeypatch.setattr(buffers, name, _recording(real[name], name, gloo))
    with _one_rank():
        for name in names:
            stand_in = getattr(buffers, name)
            assert stand_in.__module__ == cpu_compat.__name__, f"{name} is not cpu_backend's stand-in"
            assert list(inspect.signature(stand_in).parameters) == list(inspect.signature(real[name]).parameters)
            monkeypatch.setattr(buffers, name, _recording(stand_in, name, calls))
        skipped = _one_adam_step(x)
        gloo_calls_while_skipping = len(gloo)
        for name in names:
            monkeypatch.setattr(buffers, name, _recording(real[name], name, gloo))
        copied = _one_adam_step(x)
    called = sorted({name for name, _ in calls})
    assert called == sorted(names), (
        f"megatron-core's DDP no longer calls {[n for n in names if n not in called]} of param_and_grad_buffer: revisit "
        f"the one-rank collective stand-ins of {upstream.CPU_BACKEND.name}"
    )
    assert gloo_calls_while_skipping == 0 and sorted({name for name, _ in gloo}) == sorted(names)
    assert all(torch.equal(a, b) for a, b in zip(skipped, copied)) and not torch.equal(skipped[0], _initial_weight())


def _recording(function, name: str, calls: list):
    """`function`, appending (name, its result) to calls on each call."""

    def recorded(*args, **kwargs):
        result = function(*args, **kwargs)
        calls.append((name, result))
        return result

    return recorded


def _initial_weight() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4).weight.detach()


@pytest.mark.parametrize("fusion", [True, False])
def test_linear_backward_accumulates_weight_gradients_through_the_kernel_megatron_core_imports(fusion):
    """With gradient_accumulation_fusion, megatron-core's linear backward calls layers.fused_weight_gradient_mlp_cuda
    (cpu_backend's stand-in here) and leaves the summed weight gradient of both micro-batches in main_grad."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear
    from megatron.core.transformer import TransformerConfig

    calls = []
    with _one_rank():
        import megatron.core.tensor_parallel.layers as layers

        assert layers.fused_weight_gradient_mlp_cuda is cpu_compat._WeightGradAccumulation
        config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=1, gradient_accumulation_fusion=fusion)
        layer = ColumnParallelLinear(8, 4, config=config, init_method=torch.nn.init.normal_, bias=False,
                                     gather_output=False)
        ddp = DistributedDataParallel(config, DistributedDataParallelConfig(), layer)
        kernel = cpu_compat._WeightGradAccumulation
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kernel, "wgrad_gemm_accum_fp32", lambda *a: calls.append(1) or kernel.__dict__[
                "wgrad_gemm_accum_fp16"](*a))
            ddp.zero_grad_buffer()
            inputs = [torch.randn(5, 2, 8) for _ in range(2)]
            weights = [torch.randn(5, 2, 4) for _ in range(2)]
            for x, w in zip(inputs, weights):
                (ddp(x)[0] * w).sum().backward()
        main_grad = layer.weight.main_grad.clone()
    expected = sum(w.reshape(-1, 4).t() @ x.reshape(-1, 8) for x, w in zip(inputs, weights))
    assert len(calls) == (2 if fusion else 0), (
        f"megatron-core's linear backward no longer calls fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32 "
        f"({len(calls)} calls): revisit the weight-gradient stand-in of {upstream.CPU_BACKEND.name}"
    )
    torch.testing.assert_close(main_grad, expected, rtol=1e-5, atol=1e-6)
