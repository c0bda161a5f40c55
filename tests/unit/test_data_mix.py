"""Blends of named sources: proportions megatron-core realises, clear errors, the shipped presets."""

from __future__ import annotations

import collections
import json
import os

import pytest
from hydra import compose, initialize_config_dir

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import JobConfig, register_configs
from megatron_sota.config.run import DataConfig, DataSource
from megatron_sota.config.typed import check_override_keys, to_job_config
from megatron_sota.config.validation import validate_job
from megatron_sota.data.blend import SampleCounts, build_datasets
from megatron_sota.data.mix import resolve_blend
from megatron_sota.data.mix_report import (
    data_mix_report,
    format_data_mix,
    write_data_mix,
)
from megatron_sota.errors import MegatronSotaError
from tests.random_shards import VOCAB, write_shard

CONF = conf_dir()
TARGET_MIX = {"web": 45, "code": 20, "academic": 10, "books_reference": 10, "math_science": 10, "dialogue_instructions": 5}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, str]:
    """Five prefixes; books_b has a third of books_a's tokens (for token-count weights)."""
    root = tmp_path_factory.mktemp("mix")
    sizes = {"web_a": (300, 40), "web_b": (200, 40), "code_a": (300, 40), "books_a": (300, 60), "books_b": (200, 30)}
    return {
        name: write_shard(str(root / name), docs, length, seed)
        for seed, (name, (docs, length)) in enumerate(sizes.items())
    }


def three_sources(shards) -> DataConfig:
    return DataConfig(
        sources={
            "web": DataSource(weight=50, paths=[shards["web_a"], shards["web_b"]], weights=[3, 1]),
            "code": DataSource(weight=30, paths=[shards["code_a"]]),
            "books": DataSource(weight=20, paths=[shards["books_a"], shards["books_b"]]),  # by token count
        }
    )


def _tokenizer():
    from megatron_sota.data.tokenizer import build_tokenizer

    return build_tokenizer("NullTokenizer", vocab_size=VOCAB)


def test_three_source_blend_resolves_to_the_configured_proportions(shards):
    blend = resolve_blend(three_sources(shards), VOCAB)
    shares = {os.path.basename(e.prefix): e.share for e in blend.entries}
    # source share x share within the source; books by tokens: 300*60 vs 200*30 = 3:1
    assert shares == pytest.approx({"web_a": 0.375, "web_b": 0.125, "code_a": 0.3, "books_a": 0.15, "books_b": 0.05})
    assert blend.source_shares == pytest.approx({"web": 0.5, "code": 0.3, "books": 0.2})
    assert [e.config_key for e in blend.entries][:2] == ["data.sources.web.paths[0]", "data.sources.web.paths[1]"]
    assert [e.tokens for e in blend.entries] == [12000, 8000, 12000, 18000, 6000]


def test_realised_sample_counts_match_the_weights_within_megatron_core_rounding(shards):
    data = three_sources(shards)
    blend = resolve_blend(data, VOCAB)
    # Sizes whose shares are not whole samples: megatron-core's blend then holds a few more samples
    # than the run reads (it rounds each prefix up), and the report must count only those read.
    counts = SampleCounts(train=2001, valid=81, test=81)
    train, valid, _ = build_datasets(data, _tokenizer(), 32, 7, counts, None, blend)
    report = data_mix_report(blend, {"train": (train, counts.train), "valid": (valid, counts.valid)}, 32)
    assert len(train) > counts.train and report.split_samples == {"train": 2001, "valid": 81}
    # megatron-core's blending index is greedy: before each sample it picks the prefix furthest
    # below its target. So after n samples every prefix k has e_k = w_k*n - c_k > -1 (none is a
    # whole sample ahead), and since the e_k sum to 0, e_k < K-1. A source of m of the K prefixes
    # therefore lies in (-m, K-m) samples of its target share of n.
    k = len(blend.entries)
    for split, n in report.split_samples.items():
        for prefix in report.prefixes:
            assert -1 < prefix.target_share * n - prefix.samples[split] < k - 1, (split, prefix)
        for source in report.sources:
            m = sum(p.source == source.name for p in report.prefixes)
            assert -m < source.target_share * n - source.samples[split] < k - m, (split, source)
    # At n = 2001 that is within 0.25 percentage points of every target share.
    assert {s.name: round(s.share["train"], 3) for s in report.sources} == pytest.approx(
        {"web": 0.5, "code": 0.3, "books": 0.2}, abs=0.0025
    )
    # The counts are those of the samples the loader gets: each sample names its dataset.
    read = collections.Counter(int(valid[i]["dataset_id"]) for i in range(counts.valid))
    assert [read[i] for i in range(k)] == [p.samples["valid"] for p in report.prefixes]


def test_report_is_written_as_json_table_and_bar_chart(shards, tmp_path):
    data = three_sources(shards)
    blend = resolve_blend(data, VOCAB)
    train, _, _ = build_datasets(data, _tokenizer(), 32, 7, SampleCounts(200, 8, 8), None, blend)
    report = data_mix_report(blend, {"train": (train, 200)}, 32)
    json_path, png_path = write_data_mix(report, str(tmp_path))
    with open(json_path) as handle:
        saved = json.load(handle)
    assert [s["name"] for s in saved["sources"]] == ["web", "code", "books"]
    assert sum(s["samples"]["train"] for s in saved["sources"]) == 200
    with open(png_path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    table = format_data_mix(report)
    assert "web" in table and "web_b" in table and "50.00%" in table


def test_flat_paths_are_one_source_with_the_weights_given_to_megatron_core_unchanged(shards):
    data = DataConfig(paths=[shards["web_a"], shards["code_a"]], weights=[0.7, 0.3])
    blend = resolve_blend(data, VOCAB)
    assert blend.megatron_weights == (0.7, 0.3) and set(blend.source_shares) == {"default"}
    by_tokens = resolve_blend(DataConfig(paths=[shards["books_a"], shards["books_b"]]), VOCAB)
    assert by_tokens.megatron_weights == (18000, 6000)


def test_zero_weight_leaves_a_source_or_prefix_out_without_reading_its_files(shards, tmp_path):
    data = three_sources(shards)
    data.sources["code"] = DataSource(weight=0, paths=[str(tmp_path / "absent")])
    data.sources["web"].weights = [1, 0]
    data.sources["web"].paths[1] = str(tmp_path / "also_absent")
    blend = resolve_blend(data, VOCAB)
    assert [os.path.basename(p) for p in blend.prefixes] == ["web_a", "books_a", "books_b"]
    assert blend.source_shares == pytest.approx({"web": 50 / 70, "books": 20 / 70})


def _job_with(data: DataConfig) -> JobConfig:
    job = JobConfig()
    job.data = data
    return job


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: setattr(d.sources["web"], "weight", -1.0), "data.sources.web.weight=-1.0: expected a number >= 0"),
        (lambda d: setattr(d.sources["code"], "weight", None), "data.sources.code.weight=null: expected a number >= 0"),
        (lambda d: setattr(d.sources["web"], "weight", float("nan")), "data.sources.web.weight=nan"),
        (lambda d: [setattr(s, "weight", 0.0) for s in d.sources.values()],
         "data.sources weights sum to 0.0 (web=0.0, code=0.0, books=0.0): expected a positive sum"),
        (lambda d: setattr(d.sources["web"], "weights", [1.0]), "data.sources.web.weights has 1 entries but data.sources.web.paths has 2"),
        (lambda d: setattr(d.sources["web"], "weights", [1.0, -2.0]), "data.sources.web.weights[1]=-2.0: expected weights >= 0"),
        (lambda d: setattr(d.sources["web"], "weights", [0.0, 0.0]), "data.sources.web.weights sum to 0.0: expected a positive sum"),
        (lambda d: setattr(d.sources["books"], "paths", []), "data.sources.books.paths is empty"),
        (lambda d: setattr(d, "paths", ["/x"]), "data.sources and data.paths are both set"),
        (lambda d: d.sources.clear(), "data.paths is empty and data.sources has no entries"),
    ],
)
def test_bad_blend_config_is_refused_naming_the_key(shards, change, expected):
    data = three_sources(shards)
    change(data)
    with pytest.raises(MegatronSotaError) as info:
        validate_job(_job_with(data), 1)
    assert expected in str(info.value)


def test_flat_weights_that_sum_to_zero_are_refused():
    with pytest.raises(MegatronSotaError, match=r"data.weights sum to 0.0: expected a positive sum"):
        validate_job(_job_with(DataConfig(paths=["a", "b"], weights=[0.0, 0.0])), 1)


def test_missing_prefix_names_the_source_key_and_the_file(shards, tmp_path):
    data = three_sources(shards)
    missing = str(tmp_path / "nowhere" / "code_b")
    data.sources["code"].paths.append(missing)
    with pytest.raises(MegatronSotaError) as info:
        resolve_blend(data, VOCAB)
    assert str(info.value).startswith(f"data.sources.code.paths[1] = {missing!r}: expected the file {missing}.bin")


def test_every_missing_prefix_is_reported_at_once(shards, tmp_path):
    data = three_sources(shards)
    data.sources["web"].paths[0] = str(tmp_path / "web_x")
    data.sources["books"].paths[1] = str(tmp_path / "books_x")
    with pytest.raises(MegatronSotaError) as info:
        resolve_blend(data, VOCAB)
    message = str(info.value)
    assert message.startswith("2 shards of the blend failed their checks:")
    assert "data.sources.web.paths[0]" in message and "data.sources.books.paths[1]" in message


def test_shard_without_documents_names_the_source_key_and_the_file(shards, tmp_path):
    empty = write_shard(str(tmp_path / "empty"), documents=0)
    data = three_sources(shards)
    data.sources["books"].paths[1] = empty
    with pytest.raises(MegatronSotaError) as info:
        resolve_blend(data, VOCAB)
    assert "data.sources.books.paths[1]" in str(info.value) and f"{empty}.bin" in str(info.value)
    assert "empty shard" in str(info.value)


def test_shard_too_small_for_a_split_is_refused_instead_of_hanging_megatron_core(shards, tmp_path):
    # 40 documents at 98/1/1: train [0, 39), valid [39, 40), test [40, 40) -> no test documents,
    # for which megatron-core's GPTDataset would count epochs forever.
    small = write_shard(str(tmp_path / "small"), documents=40)
    data = three_sources(shards)
    data.sources["code"].paths = [small]
    with pytest.raises(MegatronSotaError) as info:
        resolve_blend(data, VOCAB)
    message = str(info.value)
    assert f"data.sources.code.paths[0] = {small!r}" in message
    assert "test split" in message and "documents [40, 40) of 40" in message


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_misspelled_source_key_names_the_valid_keys():
    expected = "unknown config key 'data.sources.web.wieght' (did you mean 'weight'?); valid keys of 'data.sources.web': weight, paths, weights"
    with pytest.raises(MegatronSotaError) as info:
        check_override_keys(["data.sources.web.wieght=3"])
    assert expected in str(info.value)
    with pytest.raises(MegatronSotaError) as info:
        to_job_config(_compose(["data=target_mix", "+data.sources.web.wieght=3"]))
    assert expected in str(info.value)


def test_sources_compose_from_the_command_line():
    job = to_job_config(_compose(["+data.sources={web:{weight:0.7,paths:[/d/a,/d/b]},code:{weight:0.3,paths:[/d/c]}}"]))
    assert job.data.sources == {"web": DataSource(0.7, ["/d/a", "/d/b"]), "code": DataSource(0.3, ["/d/c"])}


def _shares(job: JobConfig) -> dict[str, float]:
    total = sum(s.weight for s in job.data.sources.values())
    return {name: s.weight / total for name, s in job.data.sources.items()}


@pytest.mark.parametrize("stage, seq_length", [("stage1_8k", 8192), ("stage2_32k", 32768), ("stage3_hq", 32768)])
def test_stage_presets_set_sequence_length_and_a_six_source_blend(stage, seq_length, monkeypatch):
    monkeypatch.setenv("MEGATRON_SOTA_DATA_ROOT", "/mnt/tokenized")
    job = to_job_config(_compose([f"stage={stage}", "model=sota_175b"]))
    validate_job(job, 1)  # seq_length fits the model's positions; the blend config is well formed
    assert (job.name, job.train.seq_length, job.model.max_position_embeddings) == (stage, seq_length, seq_length)
    assert set(job.data.sources) == set(TARGET_MIX) and not job.data.paths
    for source in job.data.sources.values():
        assert len(source.paths) >= 3 and len(source.weights) == len(source.paths)
        assert all(p.startswith("/mnt/tokenized/") and p.endswith("_text_document") for p in source.paths)


def test_target_mix_is_the_issue_mixture_and_stage3_favours_high_quality_sources():
    target = _shares(to_job_config(_compose(["stage=stage1_8k"])))
    assert target == pytest.approx({name: w / 100 for name, w in TARGET_MIX.items()})
    assert _shares(to_job_config(_compose(["stage=stage2_32k"]))) == pytest.approx(target)
    hq_job = to_job_config(_compose(["stage=stage3_hq"]))
    hq = _shares(hq_job)
    assert hq["web"] < target["web"]
    assert all(hq[name] > target[name] for name in ("code", "academic", "books_reference", "math_science"))
    assert hq_job.data.sources["web"].weights[2] == 0  # common crawl left out
