"""Every fusion of the `kernels` group computes what the eager path computes, forward and backward.

fp32 on CPU, random inputs, the modules our builder makes with a fusion on and off. All shapes are
the end-to-end run's (tiny, 64 tokens x 2 sequences), so that tests reuse each other's compilations.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import JobConfig
from megatron_sota.config.kernels import KernelConfig
from megatron_sota.config.model import ModelConfig
from megatron_sota.config.optim import PrecisionConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.model.compiled_rms_norm import CompiledRMSNorm
from megatron_sota.model.kernel_choice import KernelChoice, choose_kernels
from megatron_sota.model.rms_norm import RMSNorm

SEQ, BATCH = 64, 2
VOCAB = 8064  # tiny's 8000, padded to a multiple of 128
# Same math, different kernels: fp32 sums in another order differ in the last bits.
TIGHT = dict(rtol=1e-5, atol=1e-6)


def test_auto_turns_fusions_on_for_cuda_only():
    auto = KernelConfig()
    assert choose_kernels(auto, "cpu", "fp32", use_te=False) == KernelChoice()
    # compile_layers stays opt-in until it has run on a GPU.
    assert choose_kernels(auto, "cuda", "bf16", use_te=False) == KernelChoice(True, True, True, False)
    # The fused cross-entropy's gradient is bf16: not chosen for fp32 or fp16 runs.
    assert not choose_kernels(auto, "cuda", "fp32", use_te=False).cross_entropy
    assert not choose_kernels(auto, "cuda", "fp16", use_te=False).cross_entropy
    # Transformer Engine brings its own norms; compiling its layers is untested.
    assert choose_kernels(auto, "cuda", "bf16", use_te=True) == KernelChoice(swiglu=True, cross_entropy=True)
    explicit = KernelConfig(swiglu=True, cross_entropy=False, rms_norm=True, compile_layers=False)
    assert choose_kernels(explicit, "cpu", "fp32", use_te=False) == KernelChoice(swiglu=True, rms_norm=True)


def test_local_spec_fusions_with_transformer_engine_are_refused_naming_each_key():
    from megatron_sota.config.machine import Machine
    from megatron_sota.config.validation import validate_job

    with pytest.raises(MegatronSotaError) as info:
        validate_job(JobConfig(kernels=KernelConfig(rms_norm=True, compile_layers=True)), 1, Machine(cuda=True, transformer_engine=True))
    assert "kernels.rms_norm=true applies to the local layer spec" in str(info.value)
    assert "kernels.compile_layers=true applies to the local layer spec" in str(info.value)
    with pytest.raises(MegatronSotaError, match="kernels.attention_backend must be one of auto, cudnn, flash, efficient, math, got 'fa3'"):
        validate_job(JobConfig(kernels=KernelConfig(attention_backend="fa3")), 1)


def test_kernel_overrides_compose_into_the_typed_config():
    from hydra import compose, initialize_config_dir

    from megatron_sota.config.job import register_configs
    from megatron_sota.config.typed import to_job_config

    conf = conf_dir()
    register_configs()
    with initialize_config_dir(config_dir=os.path.abspath(conf), version_base="1.3"):
        composed = compose(config_name="config", overrides=["kernels.swiglu=true", "kernels.compile_layers=false"])
    assert to_job_config(composed).kernels == KernelConfig(swiglu=True, compile_layers=False)


def test_compiled_rms_norm_matches_eager_and_keeps_the_sequence_parallel_mark():
    from megatron.core.transformer.transformer_config import TransformerConfig

    config = TransformerConfig(
        num_layers=1, hidden_size=256, num_attention_heads=4, sequence_parallel=True, tensor_model_parallel_size=2
    )
    eager, fused = RMSNorm(config, 256), CompiledRMSNorm(config, 256)
    torch.manual_seed(0)
    with torch.no_grad():
        eager.weight.uniform_(0.5, 1.5)
        fused.weight.copy_(eager.weight)
    x = torch.randn(SEQ, BATCH, 256) * 3
    grad_out = torch.randn(SEQ, BATCH, 256)
    results = []
    for norm in (eager, fused):
        x_in = x.clone().requires_grad_()
        out = norm(x_in)
        out.backward(grad_out)
        results.append((out, x_in.grad, norm.weight.grad))
    for name, expected, actual in zip(("output", "input grad"), results[0][:2], results[1][:2]):
        torch.testing.assert_close(actual, expected, **TIGHT, msg=lambda m: f"{name}: {m}")
    # The weight gradient sums SEQ*BATCH tokens: in fp32 the compiled kernel's reduction order (its thread split,
    # which follows the machine's load) moves an element by ~2e-5 relative (seen once in CI: 2.6e-6 absolute).
    torch.testing.assert_close(results[1][2], results[0][2], rtol=1e-4, atol=1e-5, msg=lambda m: f"weight grad: {m}")
    assert fused.weight.sequence_parallel is True
    assert list(fused.state_dict()) == list(eager.state_dict())


@contextlib.contextmanager
def _models(*choices: KernelChoice):
    """One tiny GPTModel per kernel choice, with identical weights, inside a one-rank CPU session."""
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config
    from megatron_sota.runtime.session import distributed_session

    model, parallel = ModelConfig(num_layers=1), ParallelConfig()
    with distributed_session(parallel, "cpu", 1, seed=0):
        models = []
        for kernels in choices:
            config = build_transformer_config(model, parallel, PrecisionConfig(), "none", "cpu", False, kernels)
            (chunk,) = build_model_chunks(model, config, VOCAB, SEQ, 0, False, kernels)
            if models:
                chunk.load_state_dict(models[0].state_dict())
            models.append(chunk)
        yield models


def test_builder_applies_each_choice():
    """The comparisons below would pass trivially if a switch built the eager module."""
    with _models(KernelChoice(), KernelChoice(True, True, True, True, attention_backend="math")) as (eager, fused):
        for model, on in ((eager, False), (fused, True)):
            layer = model.decoder.layers[0]
            assert (model.config.bias_activation_fusion, model.config.cross_entropy_loss_fusion) == (on, on)
            norms = (layer.input_layernorm, layer.pre_mlp_layernorm, model.decoder.final_layernorm)
            assert all(isinstance(n, CompiledRMSNorm) == on for n in norms)
            assert (layer._compiled_call_impl is not None) == on
            assert layer.self_attention.core_attention.backend_order is None if not on else (
                layer.self_attention.core_attention.backend_order[0] == torch.nn.attention.SDPBackend.MATH
            )
        # Compiled in place: the checkpoint keys are the eager model's.
        assert list(fused.state_dict()) == list(eager.state_dict())


def _forward_backward(module, inputs: dict, grad_out: torch.Tensor) -> dict:
    """Output, input gradient and every parameter gradient of one call of `module`."""
    hidden = inputs.pop("hidden_states").clone().requires_grad_()
    out = module(hidden_states=hidden, **inputs)[0]
    out.backward(grad_out)
    grads = {f"grad {name}": p.grad for name, p in module.named_parameters()}
    return {"output": out.detach(), "input grad": hidden.grad, **grads}


def _assert_same(actual: dict, expected: dict, **tol) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, **tol, msg=lambda m: f"{key}: {m}")


def test_fused_swiglu_mlp_matches_silu_gate_times_up():
    with _models(KernelChoice(), KernelChoice(swiglu=True)) as (eager, fused):
        assert not fused.config.add_bias_linear  # megatron-core's bias-free fused path
        torch.manual_seed(1)
        x, grad_out = torch.randn(SEQ, BATCH, 256), torch.randn(SEQ, BATCH, 256)
        expected = _forward_backward(eager.decoder.layers[0].mlp, {"hidden_states": x}, grad_out)
        actual = _forward_backward(fused.decoder.layers[0].mlp, {"hidden_states": x}, grad_out)
    _assert_same(actual, expected, **TIGHT)


def test_fused_cross_entropy_matches_eager_loss_and_bf16_rounded_gradient():
    with _models(KernelChoice(), KernelChoice(cross_entropy=True)) as (eager, fused):
        torch.manual_seed(2)
        logits = torch.randn(SEQ, BATCH, VOCAB) * 4
        labels = torch.randint(0, VOCAB, (BATCH, SEQ))
        weights = torch.rand(BATCH, SEQ)  # a per-token loss weighting, like the loss mask
        results = []
        for model in (eager, fused):
            # The kernels normalise fp32 logits in place: each gets its own copy.
            leaf = logits.clone().requires_grad_()
            loss = model.compute_language_model_loss(labels, leaf.clone())
            (loss * weights).sum().backward()
            results.append((loss.detach(), leaf.grad))
    (eager_loss, eager_grad), (fused_loss, fused_grad) = results
    torch.testing.assert_close(fused_loss, eager_loss, **TIGHT)
    # megatron-core's fused backward casts the logits gradient to bf16 (exact for bf16 runs, which
    # is why auto enables it only for them); otherwise it is the eager gradient.
    assert torch.equal(fused_grad, fused_grad.bfloat16().float())
    torch.testing.assert_close(fused_grad, eager_grad, rtol=2**-8, atol=1e-7)


def test_compiled_layer_matches_eager_layer():
    with _models(KernelChoice(), KernelChoice(compile_layers=True)) as (eager, fused):
        layer = fused.decoder.layers[0]
        torch.manual_seed(3)
        x, grad_out = torch.randn(SEQ, BATCH, 256), torch.randn(SEQ, BATCH, 256)
        rope = eager.rotary_pos_emb(SEQ)
        expected = _forward_backward(eager.decoder.layers[0], {"hidden_states": x, "rotary_pos_emb": rope}, grad_out)
        actual = _forward_backward(layer, {"hidden_states": x, "rotary_pos_emb": rope}, grad_out)
        # One graph per layer (nothing left to eager code between fused pieces) at TP=1.
        explained = torch._dynamo.explain(eager.decoder.layers[0])(hidden_states=x, rotary_pos_emb=rope)
    _assert_same(actual, expected, **TIGHT)
    assert explained.graph_break_count == 0, explained.break_reasons


def _three_steps(kernels: KernelConfig, run_dir) -> list[float]:
    from megatron_sota.training.trainer import pretrain

    job = JobConfig(kernels=kernels)
    job.data.mock = True
    job.data.num_workers = 0
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = SEQ, BATCH, 2 * BATCH
    job.train.iters, job.train.eval_interval = 3, 0
    job.optimizer.lr, job.scheduler.warmup_iters = 1e-3, 1
    job.runtime.device = "cpu"
    job.logging.tensorboard = False
    job.checkpoint.save_at_end = False
    return pretrain(job, str(run_dir)).losses


def test_all_fusions_on_train_like_all_off(tmp_path):
    eager = _three_steps(KernelConfig(False, False, False, False), tmp_path / "eager")
    fused = _three_steps(KernelConfig(True, True, True, True, attention_backend="math"), tmp_path / "fused")
    assert len(eager) == 3 and eager[-1] < eager[0]
    assert fused == pytest.approx(eager, rel=1e-5)


def _tp2_cross_entropy_probe(rank: int, logits: torch.Tensor, labels: torch.Tensor, grad_out: torch.Tensor) -> dict:
    """This rank's vocabulary half through megatron-core's fused and eager vocab-parallel cross-entropy.

    What differs at TP>1 is the communication around the compiled pieces, which the TP=1 test
    checks compiled; eager here saves compiling them again in two fresh processes.
    """
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.fusions.fused_cross_entropy import fused_vocab_parallel_cross_entropy

    from megatron_sota.runtime.session import distributed_session

    torch.compiler.set_stance("force_eager")
    with distributed_session(ParallelConfig(tp=2), "cpu", 1, seed=0):
        group = parallel_state.get_tensor_model_parallel_group()
        results = {}
        for name, loss_fn in (
            ("eager", tensor_parallel.vocab_parallel_cross_entropy),
            ("fused", lambda x, y: fused_vocab_parallel_cross_entropy(x, y, group)),
        ):
            shard = logits.chunk(2, dim=-1)[rank].clone().requires_grad_()
            loss = loss_fn(shard.clone(), labels)
            loss.backward(grad_out)
            results[name] = (loss.detach(), shard.grad)
        return results


def test_fused_cross_entropy_at_tp2_matches_eager_and_full_vocabulary():
    from megatron_sota.runtime.local_ranks import run_distributed

    torch.manual_seed(4)
    logits = torch.randn(SEQ, BATCH, VOCAB) * 4
    labels = torch.randint(0, VOCAB, (SEQ, BATCH))  # both halves hold targets
    grad_out = torch.rand(SEQ, BATCH)
    ranks = run_distributed(_tp2_cross_entropy_probe, 2, logits, labels, grad_out)
    full = logits.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(full.view(-1, VOCAB), labels.view(-1), reduction="none").view(SEQ, BATCH)
    loss.backward(grad_out)
    for name, grad_tol in (("eager", TIGHT), ("fused", dict(rtol=2**-8, atol=1e-7))):
        for rank in ranks:
            torch.testing.assert_close(rank[name][0], loss.detach(), **TIGHT)
        grad = torch.cat([rank[name][1] for rank in ranks], dim=-1)
        torch.testing.assert_close(grad, full.grad, **grad_tol, msg=lambda m: f"{name} gradient: {m}")


def test_the_cpu_speed_switches_are_opt_in_and_wgrad_accumulation_is_refused_with_fsdp():
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.config.validation import validate_job

    for device in ("cpu", "cuda"):
        choice = choose_kernels(KernelConfig(), device, "bf16", use_te=False)
        assert not choice.fused_adam and not choice.wgrad_accumulation
    on = choose_kernels(KernelConfig(fused_adam=True, wgrad_accumulation=True), "cpu", "fp32", use_te=False)
    assert on == KernelChoice(fused_adam=True, wgrad_accumulation=True)
    assert on.describe() == "no fusions; fused AdamW; weight gradients accumulated in the GEMM"
    job = JobConfig(kernels=KernelConfig(wgrad_accumulation=True), parallel=ParallelConfig(fsdp="optim_grads"))
    with pytest.raises(MegatronSotaError, match="kernels.wgrad_accumulation=true with parallel.fsdp=optim_grads"):
        validate_job(job, 1)
