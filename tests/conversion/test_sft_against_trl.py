"""SFT against TRL 1.16 on the same weights: megatron-core's GPTModel (Hugging Face Llama weights put in, a
vocabulary that leaves output-layer padding rows) gives SFTTrainer's loss and HF's gradients, one row per
conversation and packed; the oracle is SFTTrainer.compute_loss on one collated batch (assistant_only_loss)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from megatron_sota.conversion import llama_mapping as names
from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.posttrain.chat_template import ChatTemplate, encode_sft
from megatron_sota.posttrain.records import read_sft_records
from megatron_sota.posttrain.sft_data import row_sample
from tests.chat_tokenizer import train_chat_tokenizer

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402

# transformers' own deprecation notice, met inside TRL 1.16's trainer.
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = [
    {"messages": [SYSTEM, {"role": "user", "content": "What is two plus two?"},
                  {"role": "assistant", "content": "Two plus two is four."},
                  {"role": "user", "content": "Name a colour of the sky."},
                  {"role": "assistant", "content": "The sky is blue on a clear day."}]},
    {"messages": [{"role": "user", "content": "def add(a, b):"},
                  {"role": "assistant", "content": "    return a + b"}]},
    {"messages": [{"role": "user", "content": "And when it rains?"},
                  {"role": "assistant", "content": "Grey."}]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Our tokenizer and template, the conversations encoded by us, and a Llama whose vocabulary is the tokenizer's
    (random norms, weights scaled up for larger logits and gradients)."""
    root = tmp_path_factory.mktemp("sft_trl")
    source = train_chat_tokenizer(root)
    ours = build_tokenizer("HuggingFaceTokenizer", str(source))
    template = ChatTemplate.load(None, ours)
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in CONVERSATIONS))
    encoded = [encode_sft(record, template, ours) for record in read_sft_records([str(data)])]
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=ours.vocab_size, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )).float()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            param.uniform_(0.5, 1.5) if "norm" in name else param.mul_(5.0)
    return source, template, ours, encoded, hf


def _trl_loss_and_grads(setup, tmp_path):
    """SFTTrainer's loss on all conversations in one batch (its mean over the batch's assistant tokens) and
    the gradients of one backward, in fp32 (bf16 off: it would autocast the forward)."""
    source, template, _, _, hf = setup
    processing = transformers.AutoTokenizer.from_pretrained(str(source))
    processing.chat_template = template.text
    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), assistant_only_loss=True, report_to=[], use_cpu=True,
                         bf16=False, max_length=None, save_strategy="no")
    trainer = trl.SFTTrainer(model=copy.deepcopy(hf), args=args, train_dataset=Dataset.from_list(CONVERSATIONS),
                             processing_class=processing)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(list(trainer.train_dataset)))
    loss.backward()
    return loss.item(), {name: param.grad for name, param in trainer.model.named_parameters()}


# The CPU (local) spec's parameter names of a layer's tensors; the checkpoint keys name the norms after the
# fused linear layers of the TE spec.
_LOCAL_SPEC = {names.ATTN_NORM: "input_layernorm.weight", names.MLP_NORM: "pre_mlp_layernorm.weight"}


def _expected_grads(hf_grads: dict, model_config) -> dict:
    """HF's gradients under our parameter names: embedding, output layer, final norm and all of layer 1."""
    layer = names.layer_from_hf(hf_grads, model_config, 1)
    return {
        names.EMBEDDING: hf_grads[names.HF_EMBEDDING],
        names.OUTPUT_LAYER: hf_grads[names.HF_LM_HEAD],
        names.FINAL_NORM: hf_grads[names.HF_FINAL_NORM],
        **{"decoder.layers.1." + _LOCAL_SPEC.get(key, key.removeprefix("decoder.layers.")): value
           for key, value in layer.items()},
    }


def _batch(rows: list) -> dict:
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def _our_loss_and_grads(model, batch: dict, vocab_size: int, device) -> tuple:
    """One micro-batch through SFT's forward step and loss function, as megatron-core's schedule calls them,
    and the gradients of the mean loss per token."""
    from megatron_sota.posttrain.sft_loss import sft_forward_step

    model.zero_grad(set_to_none=True)
    output, loss_func = sft_forward_step(device, vocab_size)(iter([batch]), model)
    loss_sum, count, report = loss_func(output)
    (loss_sum / count).backward()
    assert report["lm loss"][1] == count
    return (loss_sum / count).item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _assert_grads_equal(ours: dict, expected: dict, vocab_size: int):
    for name, theirs in expected.items():
        mine = ours[name][:vocab_size] if name in (names.EMBEDDING, names.OUTPUT_LAYER) else ours[name]
        scale = theirs.abs().max().item()
        assert scale > 0, name
        error = (mine - theirs).abs().max().item()
        assert error <= 1e-5 * scale, f"{name}: max |ours - HF| {error:.3g}, largest |HF| {scale:.3g}"
    assert ours[names.OUTPUT_LAYER][vocab_size:].abs().max() == 0  # the padding rows take no part


def test_sft_loss_and_gradients_equal_trl_one_row_per_conversation_and_packed(setup, tmp_path):
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.conversion.hf_config import model_from_hf_config
    from megatron_sota.conversion.hf_import import fill_from_hf
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
    from megatron_sota.model.kernel_choice import KernelChoice
    from megatron_sota.runtime.session import distributed_session

    _, _, tokenizer, encoded, hf = setup
    vocab = tokenizer.vocab_size
    trl_loss, hf_grads = _trl_loss_and_grads(setup, tmp_path)
    model_config = model_from_hf_config(hf.config.to_dict(), "hf config", "tiny")
    longest, total = max(len(e.ids) for e in encoded), sum(len(e.ids) for e in encoded)
    one_per_row = _batch([row_sample([e], longest, tokenizer.eod, with_document_ids=False) for e in encoded])
    packed = _batch([row_sample(encoded, total + 5, tokenizer.eod, with_document_ids=True)])
    parallel = ParallelConfig()
    with distributed_session(parallel, "cpu", 1, seed=0) as session:
        padded = padded_vocab_size(vocab, model_config.make_vocab_size_divisible_by, parallel.tp)
        assert padded > vocab  # output-layer padding rows exist: they must stay out of the softmax
        kernels = KernelChoice()
        config = build_transformer_config(model_config, parallel, PrecisionConfig(), "none", "cpu", False, kernels)
        (ours,) = build_model_chunks(model_config, config, padded, total + 5, 0, False, kernels)
        fill_from_hf(ours, hf.state_dict(), model_config, padded)
        results = {name: _our_loss_and_grads(ours, batch, vocab, session.device)
                   for name, batch in (("one per row", one_per_row), ("packed", packed))}
    expected = _expected_grads(hf_grads, model_config)
    for name, (loss, grads) in results.items():
        assert loss == pytest.approx(trl_loss, rel=1e-5), name
        _assert_grads_equal(grads, expected, vocab)
