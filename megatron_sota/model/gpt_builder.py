"""Builds megatron-core GPTModel chunks (one per virtual pipeline stage) from the typed config.

It decides shapes, dtypes and kernels; it must not wrap models in DDP or touch optimizers.
"""

from __future__ import annotations

from typing import Callable, List

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.config.machine import chosen_dtype
from megatron_sota.config.model import ModelConfig
from megatron_sota.config.optim import PrecisionConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.model.compile_layers import compile_transformer_layers
from megatron_sota.model.kernel_choice import KernelChoice
from megatron_sota.model.layer_spec import build_block_spec


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Rounds the vocabulary up to a multiple of `divisible_by` (and of tp when it must).

    Padded rows take part in the softmax, so the padding must not depend on the layout:
    Megatron-LM pads to divisible_by * tp, which makes TP=2 a different model from TP=1.
    Here the padding changes with tp only when tp does not divide the padded size.
    """

    def round_up(n: int, multiple: int) -> int:
        return ((n + multiple - 1) // multiple) * multiple

    padded = round_up(vocab_size, divisible_by)
    return padded if padded % tp == 0 else round_up(vocab_size, divisible_by * tp)


def build_transformer_config(
    model: ModelConfig,
    parallel: ParallelConfig,
    precision: PrecisionConfig,
    recompute: str,
    device_type: str,
    use_te: bool,
    kernels: KernelChoice = KernelChoice(),
) -> TransformerConfig:
    """`kernels` (resolved by model.kernel_choice.choose_kernels) switches megatron-core's own fusions;
    all off by default, the eager path. What this machine cannot run (fp8 or context parallelism
    without Transformer Engine) was refused by config.validation.validate_job already."""
    dtype = chosen_dtype(precision.dtype, device_type)
    params_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    recompute_kwargs = {}
    if recompute == "selective":
        recompute_kwargs = dict(recompute_granularity="selective")
    elif recompute == "full":
        recompute_kwargs = dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    vpp = parallel.vpp if parallel.vpp and parallel.vpp > 1 else None
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=model.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        init_method_std=model.init_method_std,
        tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp,
        virtual_pipeline_model_parallel_size=vpp,
        context_parallel_size=parallel.cp,
        cp_comm_type=parallel.cp_comm_type,
        sequence_parallel=parallel.sp,
        pipeline_dtype=params_dtype,
        params_dtype=params_dtype,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        fp8=precision.fp8,
        fp8_recipe=precision.fp8_recipe,
        # Build every weight as a full master tensor on CPU, then keep this rank's slice:
        # that is what makes the initial model independent of the parallel layout.
        use_cpu_initialization=True,
        perform_initialization=True,
        # Average the loss over all tokens of the global batch, not per micro-batch.
        calculate_per_token_loss=True,
        # SwiGLU: megatron-core's torch.compile'd kernel (it handles the bias-free MLP too).
        bias_activation_fusion=kernels.swiglu,
        cross_entropy_loss_fusion=kernels.cross_entropy,
        cross_entropy_fusion_impl="native",  # "te" needs Transformer Engine
        # Apex/TE kernels only: softmax (SDPA replaces it), persistent LayerNorm, fused RoPE. compile_layers fuses
        # RoPE instead. The weight-gradient GEMM accumulating into DDP's main_grad is TE's or apex's kernel on a GPU,
        # runtime/cpu_compat.py's on CPU; only trained models under DDP may have it (validation refuses it with FSDP).
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=kernels.wgrad_accumulation,
        # Without biases and (by default) dropout, this compiles a lone residual add: nothing to fuse.
        # compile_layers fuses the add with its neighbours.
        bias_dropout_fusion=False,
        # gloo matches point-to-point messages between two ranks in posting order; the batched
        # variant posts send-prev/send-next and recv-prev/recv-next in orders that swap same-shape
        # activations and gradients at pp=2 with interleaving. The paired variant keeps them apart.
        batch_p2p_comm=device_type == "cuda",
        **recompute_kwargs,
    )


def build_model_chunks(
    model: ModelConfig,
    config: TransformerConfig,
    vocab_size: int,
    seq_length: int,
    init_seed: int,
    use_te: bool,
    kernels: KernelChoice = KernelChoice(),
    model_class: Callable[..., GPTModel] = GPTModel,
) -> List[GPTModel]:
    """One GPTModel per virtual pipeline stage held by this rank (a single one without VPP).

    `kernels` picks the norm class and whether each layer is compiled; the weights are the same either way.
    `model_class` takes GPTModel's arguments and returns a GPTModel (post-training's reward model).
    """
    vpp = config.virtual_pipeline_model_parallel_size or 1
    chunks = []
    for vp_stage in range(vpp):
        stage_arg = vp_stage if vpp > 1 else None
        pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage_arg)
        post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage_arg)
        chunks.append(
            model_class(
                config=config,
                transformer_layer_spec=build_block_spec(config, use_te, init_seed, stage_arg, kernels.rms_norm, kernels.attention_backend),
                vocab_size=vocab_size,
                max_sequence_length=max(seq_length, model.max_position_embeddings),
                pre_process=pre,
                post_process=post,
                share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
                position_embedding_type="rope",
                rotary_percent=model.rotary_percent,
                rotary_base=model.rotary_base,
                rope_scaling=model.rope_scaling_factor is not None,
                rope_scaling_factor=model.rope_scaling_factor or 8.0,
                vp_stage=stage_arg,
            )
        )
    if kernels.compile_layers:
        compile_transformer_layers(chunks)
    return chunks
