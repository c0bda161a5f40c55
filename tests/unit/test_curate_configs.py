"""Every conf/curate source config composes, validates and plans the stages its comments promise."""

from __future__ import annotations

import json

import pytest

from megatron_sota.cli.curate import compose
from megatron_sota.curation.layout import RunLayout
from megatron_sota.curation.run import resolve_inputs, validate
from megatron_sota.curation.stages import content_filters, implied_threshold, plan_stages


def _compose(source: str, overrides: list[str]):
    return compose(source, overrides)[0]


@pytest.mark.parametrize("source, filters", [
    ("web", ["length", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "toxicity"]),
    ("code", ["length", "code"]),
    ("papers", ["length", "language", "gopher_repetition", "gopher_quality", "c4", "toxicity"]),
    ("books", ["length", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "toxicity"]),
    ("dialogue", ["length", "language", "gopher_repetition", "gopher_quality", "toxicity"]),
])
def test_source_config_plans_its_filters_then_dedup_then_report(source, filters, tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    cfg = _compose(source, [f"input.paths=[{tmp_path / 'in.jsonl'}]", f"output_dir={tmp_path / 'out'}"])
    assert cfg.source == source and cfg.quality.threshold == 0.7
    validate(cfg)
    stages = plan_stages(cfg, RunLayout(str(tmp_path / "out")), resolve_inputs(cfg))
    assert [s.name for s in stages] == ["filter", "exact_find", "exact_filter", "minhash_buckets",
                                        "minhash_cluster", "minhash_filter", "report"]
    assert stages[3].tasks == cfg.dedup.minhash.bands
    plan = stages[-1].pipeline[0].plan
    assert plan.tallies == ["input", *filters, "exact_dedup", "minhash"]
    assert 0.5 < plan.minhash["implied_threshold"] < 0.8
    m = cfg.dedup.minhash
    for stage in stages[2:6]:  # signatures, buckets, cluster, filter-side: one MinHash setting throughout
        for step in stage.pipeline:
            if getattr(step, "config", None) is not None and hasattr(step.config, "num_buckets"):
                assert (step.config.n_grams, step.config.num_buckets, step.config.hashes_per_bucket) == (
                    m.n_grams, m.bands, m.rows), (stage.name, step)


def test_implied_threshold_is_where_a_pair_is_caught_half_the_time():
    bands, rows = 14, 8
    threshold = implied_threshold(bands, rows)
    assert threshold == pytest.approx(0.7190, abs=1e-4)
    caught = 1 - (1 - threshold**rows) ** bands  # probability that some band agrees entirely
    assert 0.5 < caught < 0.7  # the S-curve's steep part: (1/b)^(1/r) is its usual approximation


def test_slurm_without_a_partition_is_refused(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    cfg = _compose("web", [f"input.paths=[{tmp_path / 'in.jsonl'}]", "executor=slurm"])
    with pytest.raises(Exception, match="executor.partition: expected the SLURM partition"):
        validate(cfg)


def test_every_threshold_of_the_datatrove_rules_reaches_its_step(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    wanted = {
        ("gopher_repetition", "dup_line_frac"): 0.21, ("gopher_repetition", "dup_para_char_frac"): 0.11,
        ("gopher_quality", "min_doc_words"): 77, ("gopher_quality", "max_symbol_word_ratio"): 0.07,
        ("gopher_quality", "min_stop_words"): 5, ("gopher_quality", "max_non_alpha_words_ratio"): 0.6,
        ("c4", "min_num_sentences"): 9, ("c4", "min_words_per_line"): 4, ("c4", "filter_curly_bracket"): False,
        ("fineweb", "line_punct_thr"): 0.33, ("fineweb", "short_line_length"): 25, ("fineweb", "new_line_ratio"): 0.4,
    }
    overrides = [f"filters.{group}.{key}={str(value).lower()}" for (group, key), value in wanted.items()]
    cfg = _compose("web", [f"input.paths=[{tmp_path / 'in.jsonl'}]", *overrides])
    steps = dict(content_filters(cfg, RunLayout(str(tmp_path / "out"))))
    for (group, key), value in wanted.items():
        assert getattr(steps[group], key) == value, (group, key)
    assert steps["gopher_repetition"].top_n_grams == ((2, 0.2), (3, 0.18), (4, 0.16))
