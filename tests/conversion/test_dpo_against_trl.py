"""DPO against TRL 1.16 on the same weights: our loss and metrics from per-token log-probs equal DPOTrainer's,
and megatron-core's GPTModel (weights put in from the Hugging Face model) gives the log-probs and gradients HF gives.

The oracle is TRL's own loss computation (DPOTrainer.compute_loss on one collated batch, reference model beside it).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from megatron_sota.posttrain.dpo_loss import DPOSettings, dpo_loss, dpo_loss_func, mean_metrics

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

# transformers' own deprecation notices, met inside TRL 1.16's trainer.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

VOCAB = 200  # padded to 256 inside megatron_sota: the padding rows must stay out of the softmax
EOS = VOCAB - 1
BETA = 0.1
# (prompt, chosen, rejected) token ids; completions of different lengths, some ending at EOS.
PAIRS = [
    ([5, 17, 42], [8, 9, EOS], [11, EOS]),
    ([3], [60, 61, 62, 63], [70]),
    ([90, 91, 92, 93, 94], [100, EOS], [101, 102, 103, EOS]),
    ([7, 7], [20], [21, 22]),
]
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def _hf_config():
    return transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=EOS, pad_token_id=EOS,
    )


@pytest.fixture(scope="module")
def hf_models():
    """A policy with random norms, and a reference: the policy with every weight perturbed (so that Δ ≠ 0)."""
    torch.manual_seed(0)
    policy = transformers.LlamaForCausalLM(_hf_config()).float()
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.mul_(10.0)  # larger logits: log-probs that differ between the two models
    reference = transformers.LlamaForCausalLM(_hf_config()).float()
    reference.load_state_dict(policy.state_dict())
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(0.05 * param.abs().mean() * torch.randn_like(param))
    return policy, reference


def _trainer(policy, reference, tmp_path, **config):
    """A DPOTrainer over a throwaway dataset (its tokenizer: a word-level one built in memory), in fp32 (DPOConfig's
    bf16 defaults to True: it would wrap the models' forward in autocast), on copies of the models it patches."""
    vocab = {f"t{i}": i for i in range(VOCAB - 1)} | {"<eos>": EOS}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")
    dataset = Dataset.from_dict({"prompt": ["t1"], "chosen": [" t2"], "rejected": [" t3"]})
    args = trl.DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, beta=BETA, save_strategy="no", **config)
    trainer = trl.DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.model.train()
    return trainer


def _collated():
    """PAIRS as TRL's collator lays them out: all chosen rows, then all rejected ones (pair_rows' order too)."""
    collator = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=EOS)
    return collator([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in PAIRS])


def _trl_loss(trainer):
    """TRL's loss on PAIRS and its logged metrics."""
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, _collated())
    return loss, {name: trainer._metrics["train"][name][0] for name in METRICS}


def _our_layout():
    """TRL's batch as our micro-batch: tokens without the last id, labels the next token, loss_mask on completion
    targets; the rows stay in TRL's order."""
    batch = _collated()
    ids, completion = batch["input_ids"], batch["completion_mask"]
    return ids[:, :-1], ids[:, 1:], completion[:, 1:].float()


def _pair_table(rows: torch.Tensor) -> torch.Tensor:
    """Per-row values of our layout -> [pair, (chosen, rejected)]."""
    return rows.view(2, -1).T


def _hf_token_logps(model, tokens, labels):
    logits = model(input_ids=tokens).logits.float()
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _assert_close(ours: float, theirs: float, what: str):
    assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-7), f"{what}: ours {ours}, TRL {theirs}"


# label smoothing: TRL 1.16's 'sigmoid' has none; its 'robust' loss is (−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)) / (1−2ε),
# so sigmoid × 2(1−ε) + robust × −(1−2ε) is exactly the conservative loss −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ).
CASES = {
    "sigmoid": (DPOSettings(beta=BETA), dict(loss_type=["sigmoid"])),
    "sft_term": (DPOSettings(beta=BETA, sft_weight=0.7), dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.7])),
    "label_smoothing": (DPOSettings(beta=BETA, label_smoothing=0.2),
                        dict(loss_type=["sigmoid", "robust"], loss_weights=[2 * 0.8, -0.6], label_smoothing=0.2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_metrics_from_hf_log_probs_equal_trl(hf_models, tmp_path, case):
    settings, trl_config = CASES[case]
    policy, reference = hf_models
    trl_loss, trl_metrics = _trl_loss(_trainer(policy, reference, tmp_path, **trl_config))
    tokens, labels, loss_mask = _our_layout()
    with torch.no_grad():
        ref_logps = _pair_table((_hf_token_logps(reference, tokens, labels) * loss_mask).sum(1))
        loss_sum, pairs, report = dpo_loss(_hf_token_logps(policy, tokens, labels), loss_mask, ref_logps, settings)
    _assert_close(loss_sum.item() / int(pairs), trl_loss.item(), "loss")
    ours = mean_metrics([report])
    for name in METRICS:
        _assert_close(ours[name], trl_metrics[name], name)
    assert abs(trl_loss.item() - math.log(2)) > 1e-3  # the reference differs from the policy


def test_trl_and_ours_give_ln2_when_the_policy_is_the_reference(hf_models, tmp_path):
    policy, _ = hf_models
    copy = transformers.LlamaForCausalLM(_hf_config()).float()
    copy.load_state_dict(policy.state_dict())
    trl_loss, _ = _trl_loss(_trainer(policy, copy, tmp_path))
    tokens, labels, loss_mask = _our_layout()
    with torch.no_grad():
        per_token = _hf_token_logps(policy, tokens, labels)
        reference = _pair_table((per_token * loss_mask).sum(1))
        loss_sum, pairs, _ = dpo_loss(per_token, loss_mask, reference, DPOSettings(beta=BETA))
    _assert_close(trl_loss.item(), math.log(2), "TRL")
    _assert_close(loss_sum.item() / int(pairs), math.log(2), "ours")


def _pair_samples(tokens, labels, loss_mask):
    """The pairs of our layout as reference-pass samples, each cut to its own longer row."""
    samples = []
    for k, (_, chosen, rejected) in enumerate(PAIRS):
        width = len(PAIRS[k][0]) + max(len(chosen), len(rejected)) - 1
        rows = [k, len(PAIRS) + k]
        samples.append({"pair_index": k, "tokens": tokens[rows, :width], "labels": labels[rows, :width],
                        "loss_mask": loss_mask[rows, :width]})
    return samples[::-1]  # any order: the table is indexed by pair_index


def _model_config(hf_model):
    from megatron_sota.conversion.hf_config import model_from_hf_config

    return model_from_hf_config(hf_model.config.to_dict(), "hf config", "tiny")


def _our_chunks(hf_config: dict, weights: dict, parallel, seq_length: int) -> tuple:
    """This rank's GPTModel chunks holding the HF weights (inside a distributed session), and their padded vocabulary."""
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.conversion.hf_config import model_from_hf_config
    from megatron_sota.conversion.hf_import import fill_from_hf
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
    from megatron_sota.model.kernel_choice import KernelChoice

    model_config = model_from_hf_config(hf_config, "hf config", "tiny")
    padded = padded_vocab_size(VOCAB, model_config.make_vocab_size_divisible_by, parallel.tp)
    config = build_transformer_config(model_config, parallel, PrecisionConfig(), "none", "cpu", False, KernelChoice())
    chunks = build_model_chunks(model_config, config, padded, seq_length, 0, False, KernelChoice())
    for chunk in chunks:
        fill_from_hf(chunk, weights, model_config, padded)
    return chunks, padded


def test_gpt_model_reference_table_loss_and_gradients_equal_hf_and_trl(hf_models, tmp_path):
    """Our GPTModel with the HF weights: the reference pass through the schedule, ln 2 at step 0, then with the
    policy's weights the per-token log-probs, the DPO loss with an SFT term (against TRL) and one backward (against HF)."""
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.conversion.hf_import import fill_from_hf
    from megatron_sota.posttrain.reference_logps import compute_reference_logps
    from megatron_sota.posttrain.token_logps import token_logps
    from megatron_sota.runtime.session import distributed_session

    policy, reference = hf_models
    settings, trl_config = CASES["sft_term"]
    trainer = _trainer(policy, reference, tmp_path, **trl_config)
    trl_loss, trl_metrics = _trl_loss(trainer)
    trl_loss.backward()
    tokens, labels, loss_mask = _our_layout()
    with torch.no_grad():
        hf_ref = _pair_table((_hf_token_logps(reference, tokens, labels) * loss_mask).sum(1)).double()
        hf_policy = _hf_token_logps(policy, tokens, labels)
    parallel = ParallelConfig()
    with distributed_session(parallel, "cpu", 1, seed=0) as session:
        (ours,), padded = _our_chunks(reference.config.to_dict(), reference.state_dict(), parallel, tokens.shape[1])
        assert padded > VOCAB
        positions = torch.arange(tokens.shape[1]).expand_as(tokens)
        table = compute_reference_logps([ours], _pair_samples(tokens, labels, loss_mask), len(PAIRS), VOCAB, 3, session.device)
        with torch.no_grad():
            step0 = dpo_loss(token_logps(ours(tokens, positions, None), labels, VOCAB), loss_mask, table, DPOSettings(BETA))
        fill_from_hf(ours, policy.state_dict(), _model_config(policy), padded)
        logits = ours(tokens, positions, None)
        per_token = token_logps(logits, labels, VOCAB).detach()
        loss_sum, pairs, report = dpo_loss_func(labels, loss_mask, table, VOCAB, settings, logits)  # the schedule's call
        (loss_sum / pairs).backward()
    torch.testing.assert_close(table, hf_ref, rtol=1e-5, atol=1e-6)
    _assert_close(step0[0].item() / int(step0[1]), math.log(2), "loss at step 0")
    torch.testing.assert_close(per_token[loss_mask.bool()], hf_policy[loss_mask.bool()], rtol=1e-5, atol=1e-6)
    _assert_close(loss_sum.item() / int(pairs), trl_loss.item(), "loss")
    ours_metrics = mean_metrics([report])
    for name in METRICS:
        _assert_close(ours_metrics[name], trl_metrics[name], name)
    hf = trainer.model
    for mine, theirs in ((ours.output_layer.weight.grad[:VOCAB], hf.lm_head.weight.grad),
                         (ours.embedding.word_embeddings.weight.grad[:VOCAB], hf.model.embed_tokens.weight.grad),
                         (ours.decoder.final_layernorm.weight.grad, hf.model.norm.weight.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert ours.output_layer.weight.grad[VOCAB:].abs().max() == 0  # the padding rows take no part


def _reference_table_probe(rank: int, hf_config: dict, weights: dict, samples: list, parallel: dict) -> torch.Tensor:
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.posttrain.reference_logps import compute_reference_logps
    from megatron_sota.runtime.session import distributed_session

    layout = ParallelConfig(**parallel)
    with distributed_session(layout, "cpu") as session:
        chunks, _ = _our_chunks(hf_config, weights, layout, max(s["tokens"].shape[1] for s in samples))
        return compute_reference_logps(chunks, samples, len(PAIRS), VOCAB, 1, session.device)


@pytest.mark.parametrize("parallel", [dict(tp=2), dict(pp=2), dict()], ids=["tp2", "pp2", "dp2"])
def test_the_reference_table_is_the_same_at_tp2_pp2_and_dp2_on_every_rank(hf_models, parallel):
    from megatron_sota.runtime.local_ranks import run_distributed

    _, reference = hf_models
    tokens, labels, loss_mask = _our_layout()
    with torch.no_grad():
        hf_ref = _pair_table((_hf_token_logps(reference, tokens, labels) * loss_mask).sum(1)).double()
    tables = run_distributed(_reference_table_probe, 2, reference.config.to_dict(), reference.state_dict(),
                             _pair_samples(tokens, labels, loss_mask), parallel)
    assert torch.equal(tables[0], tables[1])
    torch.testing.assert_close(tables[0], hf_ref, rtol=1e-5, atol=1e-6)
