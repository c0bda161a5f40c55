"""The passkey task without a model: samples (deterministic, lengths in the tokenizer's tokens, needle at its depth),
its task-file keys, the refusal of a length beyond the model's positions, and the grid / table / heat map of its rows."""

from __future__ import annotations

import io
import os

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.passkey import NEEDLE, QUESTION, PasskeySample, passkey_samples
from megatron_sota.evaluation.passkey_report import cell_metric, format_grid, heatmap_figure, passkey_grid, passkey_rows, write_heatmap
from megatron_sota.evaluation.task_spec import TaskSpec, load_task

LENGTHS, DEPTHS = (150, 333), (0.0, 0.3, 0.5, 1.0)


@pytest.fixture(scope="module")
def tokenizer(stdlib_shards):
    from megatron_sota.data.tokenizer import build_tokenizer

    return build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)


def _spec(**settings) -> TaskSpec:
    return TaskSpec("pk", "passkey", "", **{"lengths": LENGTHS, "depths": DEPTHS, "samples": 3, **settings})


def _find(tokens: list[int], part: list[int]) -> list[int]:
    return [i for i in range(len(tokens) - len(part) + 1) if tokens[i : i + len(part)] == part]


def test_samples_are_deterministic_in_model_tokens_with_the_needle_at_its_depth(tokenizer):
    samples = passkey_samples(_spec(), tokenizer)
    assert samples == passkey_samples(_spec(), tokenizer)  # the same prompts and keys in every run
    assert [(s.length, s.depth, s.index) for s in samples] == [(n, d, i) for n in LENGTHS for d in DEPTHS for i in range(3)]
    question = tokenizer.tokenize(QUESTION)
    for s in samples:
        assert len(s.tokens) == s.length and s.tokens[-len(question):] == question
        assert len(s.key) == 5 and s.key.isdigit()
        needle = tokenizer.tokenize(NEEDLE.format(key=s.key))
        (at,) = _find(s.tokens, needle)  # exactly once
        filler = s.length - len(needle) - len(question)
        assert abs(at - s.depth * filler) <= 1, (s.length, s.depth, at, filler)
        assert tokenizer.detokenize(s.tokens).count(f"The pass key is {s.key}. Remember it.") == 1
    assert len({s.key for s in samples}) > len(samples) // 2  # keys vary by cell and sample
    assert [s.key for s in passkey_samples(_spec(seed=7), tokenizer)] != [s.key for s in samples]
    assert len(passkey_samples(_spec(), tokenizer, limit=1)) == len(LENGTHS) * len(DEPTHS)  # a limit counts per cell


def test_a_filler_file_is_the_haystack_and_a_length_too_short_for_the_needle_is_refused(tokenizer, tmp_path):
    filler = tmp_path / "filler.txt"
    filler.write_text("Lorem ipsum dolor sit amet. ")
    (sample,) = passkey_samples(_spec(lengths=(120,), depths=(1.0,), samples=1, filler=str(filler)), tokenizer)
    assert "ipsum dolor" in tokenizer.detokenize(sample.tokens) and "river" not in tokenizer.detokenize(sample.tokens)
    with pytest.raises(MegatronSotaError, match=r"task pk: key 'lengths': expected lengths of at least \d+ tokens .*found 8"):
        passkey_samples(_spec(lengths=(8,)), tokenizer)


def _registry(tmp_path, text: str) -> str:
    (tmp_path / "pk.yaml").write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("type: passkey\nlengths: [256]\nfile: x.jsonl\n", r"pk\.yaml:3: key 'file': a passkey task generates its prompts"),
        ("type: passkey\nlengths: [256]\nnum_fewshot: 2\n", r"pk\.yaml:3: key 'num_fewshot': a passkey task generates its prompts"),
        ("type: passkey\ndepths: [0.5]\n", r"pk\.yaml: key 'lengths': expected a non-empty list \(required for type passkey\)"),
        ("type: passkey\nlengths: [256]\ndepths: [0, 1.5]\n", r"pk\.yaml:3: key 'depths': expected a list of numbers from 0\.0 to 1\.0, found \[0, 1\.5\]"),
        ("type: passkey\nlengths: [256, 0]\n", r"pk\.yaml:2: key 'lengths': expected a list of integers >= 1, found \[256, 0\]"),
        ("type: passkey\nlengths: [256, 256]\n", r"pk\.yaml:2: key 'lengths': expected each value once"),
        ("type: passkey\nlengths: [256]\nfiller: none.txt\n", r"pk\.yaml:3: key 'filler': expected a text file .*none\.txt"),
        ("type: exact_match\nlengths: [256]\n", r"pk\.yaml:2: key 'lengths': only passkey tasks read it"),
        ("type: exact_match\nstop: x\n", r"pk\.yaml: key 'file': expected it \(required for type exact_match\)"),
    ],
)
def test_passkey_task_file_errors_name_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(MegatronSotaError, match=expected):
        load_task("pk", registry_dir=_registry(tmp_path, text))


def test_a_length_beyond_max_position_embeddings_is_refused_before_training_naming_file_and_key(tmp_path, stdlib_shards):
    from megatron_sota.config.job import JobConfig
    from megatron_sota.evaluation.task_checks import task_problems

    yaml_file = os.path.join(_registry(tmp_path, "type: passkey\nlengths: [256, 1024]\nmax_new_tokens: 8\n"), "pk.yaml")
    job = JobConfig()
    job.tokenizer.type, job.tokenizer.model = "SentencePieceTokenizer", stdlib_shards.tokenizer_model
    job.eval.tasks, job.eval.interval = [yaml_file], 10
    job.model.max_position_embeddings = 1024
    (problem,) = task_problems(job)
    assert problem == (
        f"eval.tasks: {yaml_file}: key 'lengths': expected lengths <= 1016 "
        "(the model's max_position_embeddings 1024 less max_new_tokens 8), found 1024"
    )
    job.model.max_position_embeddings = 1032
    assert task_problems(job) == []


def test_the_shipped_passkey_task_fits_model_tiny():
    from megatron_sota.evaluation.passkey import check_lengths_fit

    spec = load_task("passkey")
    assert spec.type == "passkey" and spec.path == "" and max(spec.lengths) > 1024
    check_lengths_fit(spec, 2048)  # conf/model/tiny.yaml's max_position_embeddings


def _samples() -> list[PasskeySample]:
    return [PasskeySample(n, d, i, "12345", [0] * n, 0) for n in LENGTHS for d in DEPTHS for i in range(2)]


def test_rows_grid_table_and_heat_map_have_one_cell_per_length_and_depth(tmp_path):
    from PIL import Image

    samples = _samples()
    # right at depth 0 always, at the longer length never, otherwise only the first sample of a cell
    correct = [1.0 if s.depth == 0.0 else 0.0 if s.length == 333 else float(s.index == 0) for s in samples]
    rows = passkey_rows("pk", samples, correct)
    assert (rows[0].metric, rows[0].value, rows[0].n) == ("exact_match", sum(correct) / len(correct), len(samples))
    assert [r.metric for r in rows[1:]] == [cell_metric(n, d) for n in LENGTHS for d in DEPTHS]
    grid = passkey_grid(_spec(), rows)
    assert grid.accuracy == ((1.0, 0.5, 0.5, 0.5), (1.0, 0.0, 0.0, 0.0)) and grid.samples == ((2,) * 4,) * 2

    table = format_grid(grid).splitlines()
    assert table[1].split() == ["length", "\\", "depth", "0", "0.3", "0.5", "1"]
    assert [line.split() for line in table[2:]] == [["150", "1.00", "0.50", "0.50", "0.50"], ["333", "1.00", "0.00", "0.00", "0.00"]]

    figure = heatmap_figure(grid)
    (axes, _colorbar) = figure.axes
    assert axes.images[0].get_array().shape == (len(LENGTHS), len(DEPTHS))
    assert [t.get_text() for t in axes.texts] == ["1.00", "0.50", "0.50", "0.50", "1.00", "0.00", "0.00", "0.00"]
    path = tmp_path / "report.pk.png"
    write_heatmap(str(path), grid)
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 0


def test_a_cell_without_a_row_shows_as_missing():
    rows = passkey_rows("pk", _samples()[:2], [1.0, 0.0])  # only (150, 0.0)
    grid = passkey_grid(_spec(), rows)
    assert grid.accuracy[0] == (0.5, None, None, None) and grid.accuracy[1] == (None,) * 4
    assert format_grid(grid).splitlines()[3].split() == ["333", "-", "-", "-", "-"]
