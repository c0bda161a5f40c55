"""tools/cai.py on real checkpoints: a judge fine-tuned on the oracle's rule labels held-out comparisons as the
oracle does, and both commands' outputs load in post-training I's SFT and preference loaders."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.posttrain.cai_judge import CONSTITUTION, comparisons, judge_job, write_comparisons


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """(checkpoint directory, work directory, training seconds): the judge SFT-trained on the training comparisons."""
    from megatron_sota.posttrain.run import posttrain

    work = tmp_path_factory.mktemp("cai")
    start = time.perf_counter()
    posttrain(judge_job(work), str(work / "judge"))
    (work / "constitution.yaml").write_text("principles:\n" + CONSTITUTION)
    return str(work / "judge" / "checkpoints"), work, time.perf_counter() - start


def _checkpoint_job(checkpoint):
    from megatron_sota.checkpointing.dist_reader import DistCheckpointReader
    from megatron_sota.checkpointing.paths import resolve_checkpoint_dir

    return DistCheckpointReader(resolve_checkpoint_dir(checkpoint, "checkpoint")).job_config()


def _tokenizer_and_template(checkpoint):
    from megatron_sota.data.tokenizer import build_configured_tokenizer
    from megatron_sota.posttrain.chat_template import ChatTemplate

    job = _checkpoint_job(checkpoint)
    tokenizer = build_configured_tokenizer(job.tokenizer, job.model.vocab_size)
    return tokenizer, ChatTemplate.load(None, tokenizer)


@pytest.mark.slow
def test_label_agrees_with_the_oracle_on_held_out_comparisons_and_writes_loadable_pairs(judge):
    from megatron_sota.cli.cai import parse_args, run_label
    from megatron_sota.posttrain.chat_template import encode_preference_records
    from megatron_sota.posttrain.records import read_preference_records

    checkpoint, work, seconds = judge
    held_out = write_comparisons(work / "held_out.jsonl", held_out=True)
    out = work / "pairs.jsonl"
    run_label(parse_args(["label", "--judge", checkpoint, "--prompts", held_out, "--constitution", str(work / "constitution.yaml"),
                          "--output", str(out), "--principles-per-comparison", "2", "--no-progress"]))
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    oracle = {c.prompt: c.response_a if a_wins else c.response_b for c, a_wins in comparisons(held_out=True)}
    agreement = sum(p["chosen"] == oracle[p["prompt"]] for p in pairs) / len(oracle)  # a dropped tie disagrees
    print(f"judge trained in {seconds:.1f} s; agreement with the oracle on {len(oracle)} held-out comparisons: {agreement:.3f}")
    assert agreement >= 0.8  # chance is 0.5
    assert all(0.5 < p["cai_preference"] <= 1 and sorted(p["cai_principles"]) == ["better", "safer"] for p in pairs)
    # --policy: two sampled responses per prompt (hot sampling, so that they differ), judged the same way.
    prompts = work / "policy_prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": c.prompt}) + "\n" for c, _ in comparisons(held_out=True)[:4]))
    sampled = work / "sampled_pairs.jsonl"
    run_label(parse_args(["label", "--judge", checkpoint, "--policy", checkpoint, "--prompts", str(prompts), "--output", str(sampled),
                          "--constitution", str(work / "constitution.yaml"), "--temperature", "3", "--max-new-tokens", "6", "--no-progress"]))
    tokenizer, template = _tokenizer_and_template(checkpoint)
    records = read_preference_records([str(out), str(sampled)])
    assert len(records) > len(pairs) and all(r.chosen != r.rejected for r in records)
    assert len(encode_preference_records(records, template, tokenizer, max_tokens=256)) == len(records)


@pytest.mark.slow
def test_critique_writes_sft_conversations_the_sft_loader_encodes_and_refuses_an_over_long_prompt(judge):
    from megatron_sota.cli.cai import parse_args, run_critique
    from megatron_sota.errors import MegatronSotaError
    from megatron_sota.posttrain.chat_template import encode_sft_records
    from megatron_sota.posttrain.records import read_sft_records

    checkpoint, work, _ = judge
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": c.prompt}) + "\n" for c, _ in comparisons(held_out=True)[:3]))
    out = work / "sft.jsonl"
    flags = ["--checkpoint", checkpoint, "--constitution", str(work / "constitution.yaml"), "--output", str(out),
             "--revisions", "2", "--max-new-tokens", "6", "--no-progress"]
    run_critique(parse_args(["critique", "--prompts", str(prompts), *flags]))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        steps = line["cai"]
        assert len(steps["principles"]) == len(steps["critiques"]) == len(steps["revisions"]) == 2
        final = next((r for r in reversed(steps["revisions"]) if r), steps["response"])
        assert line["messages"][1] == {"role": "assistant", "content": final}
    tokenizer, template = _tokenizer_and_template(checkpoint)
    assert len(encode_sft_records(read_sft_records([str(out)]), template, tokenizer)) == 3

    long = work / "long.jsonl"
    long.write_text(json.dumps({"prompt": "short"}) + "\n" + json.dumps({"prompt": "word " * _checkpoint_job(checkpoint).model.max_position_embeddings}) + "\n")
    with pytest.raises(MegatronSotaError, match=f"{long}:2: response: expected at most"):
        run_critique(parse_args(["critique", "--prompts", str(long), *flags[2:], "--checkpoint", checkpoint]))
    assert os.path.exists(out)
