"""Specification of tools/preprocess_data.py: Megatron-LM's bytes, any worker/partition count,
every input format, bad input, interruption and resume, merging.

Expected shards are built independently: raw SentencePiece ids + EOS written document by
document through megatron-core's IndexedDatasetBuilder, which is what Megatron-LM's tool does.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import subprocess
import sys

import pytest
import sentencepiece
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_sota.data import preprocess as preprocess_module
from megatron_sota.data.encode_worker import TokenizerSpec
from megatron_sota.data.merge import merge_datasets
from megatron_sota.data.preprocess import PreprocessOptions, preprocess
from megatron_sota.data.readers import Piece, expand_inputs, iter_payloads, read_chunks
from megatron_sota.data.stdlib_corpus import write_stdlib_corpus
from megatron_sota.data.tokenizer_training import train_sentencepiece
from megatron_sota.errors import MegatronSotaError
from tests.tool_runner import run_tool

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_FILES = 40
# Small chunks so 40 documents make many worker tasks and partition boundaries fall mid-file.
SMALL_CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("preprocess")


@pytest.fixture(scope="module")
def corpus(workdir: pathlib.Path) -> pathlib.Path:
    path = workdir / "corpus.jsonl"
    write_stdlib_corpus(str(path), max_files=MAX_FILES)
    return path


@pytest.fixture(scope="module")
def docs(corpus: pathlib.Path) -> list[str]:
    return [json.loads(line)["text"] for line in corpus.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def spm_model(corpus: pathlib.Path, workdir: pathlib.Path) -> str:
    return train_sentencepiece([str(corpus)], str(workdir / "spm"), vocab_size=800, quiet=True).model_path


def _options(inputs, prefix, model, **overrides) -> PreprocessOptions:
    settings = dict(
        inputs=tuple(str(i) for i in (inputs if isinstance(inputs, (list, tuple)) else [inputs])),
        output_prefix=str(prefix),
        tokenizer=TokenizerSpec("SentencePieceTokenizer", model=model),
        append_eod=True,
        chunk_bytes=SMALL_CHUNK,
        progress=False,
    )
    settings.update(overrides)
    return PreprocessOptions(**settings)


def _megatron_lm_reference(texts: list[str], model: str, prefix: pathlib.Path) -> str:
    """What Megatron-LM's tools/preprocess_data.py writes for these texts with --append-eod."""
    processor = sentencepiece.SentencePieceProcessor(model_file=model)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(processor.vocab_size()))
    for text in texts:
        ids = processor.encode_as_ids(text) + [processor.eos_id()]
        builder.add_document(ids, [len(ids)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def _same_bytes(prefix_a: str, prefix_b: str) -> bool:
    return all(
        pathlib.Path(prefix_a + ext).read_bytes() == pathlib.Path(prefix_b + ext).read_bytes()
        for ext in (".bin", ".idx")
    )


@pytest.fixture(scope="module")
def reference(docs, spm_model, workdir) -> str:
    return _megatron_lm_reference(docs, spm_model, workdir / "reference")


def test_output_is_byte_identical_to_megatron_lm_and_reads_back(
    corpus, docs, spm_model, reference, tmp_path
):
    stats = preprocess(_options(corpus, tmp_path / "out", spm_model))
    written = str(tmp_path / "out_text_document")
    assert _same_bytes(written, reference)
    dataset = IndexedDataset(written)
    processor = sentencepiece.SentencePieceProcessor(model_file=spm_model)
    assert len(dataset) == stats.documents == len(docs)
    assert dataset[7].tolist() == processor.encode_as_ids(docs[7]) + [processor.eos_id()]
    assert stats.tokens == int(dataset.sequence_lengths.sum())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_text_document.bin", "out_text_document.idx"]


@pytest.mark.parametrize("workers,partitions", [(2, 1), (1, 3), (2, 5)])
def test_output_is_the_same_for_any_worker_and_partition_count(
    corpus, spm_model, reference, tmp_path, workers, partitions
):
    stats = preprocess(_options(corpus, tmp_path / "out", spm_model, workers=workers, partitions=partitions))
    assert _same_bytes(str(tmp_path / "out_text_document"), reference)
    assert stats.documents == MAX_FILES
    assert not stats.skipped  # no line cut in two at a partition boundary
    assert not (tmp_path / "out_document.partitions").exists()


def test_every_input_format_gives_the_same_shard(corpus, docs, spm_model, reference, tmp_path):
    raw = corpus.read_bytes()
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    import pyarrow
    import pyarrow.parquet
    import zstandard

    zst = tmp_path / "c.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw))
    parquet = tmp_path / "c.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": docs}), parquet, row_group_size=7)
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    for i, text in enumerate(docs):  # sorted names keep the document order
        (text_dir / f"doc{i:03d}.py").write_text(text, encoding="utf-8")
    for name, source in [("gz", gz), ("zst", zst), ("parquet", parquet), ("dir", text_dir)]:
        preprocess(_options(source, tmp_path / name, spm_model, workers=2))
        assert _same_bytes(str(tmp_path / f"{name}_text_document"), reference), name


def test_a_glob_reads_files_in_sorted_order(docs, spm_model, tmp_path):
    for part, rows in enumerate([docs[:25], docs[25:]]):
        lines = "".join(json.dumps({"text": t}) + "\n" for t in rows)
        (tmp_path / f"shard_{part}.jsonl").write_text(lines)
    preprocess(_options(tmp_path / "shard_*.jsonl", tmp_path / "glob", spm_model, partitions=2))
    expected = _megatron_lm_reference(docs, spm_model, tmp_path / "expected")
    assert _same_bytes(str(tmp_path / "glob_text_document"), expected)


@pytest.mark.parametrize("chunk_bytes", [7, 100, 1 << 20])
def test_byte_ranges_give_every_line_to_exactly_one_piece(tmp_path, chunk_bytes):
    lines = [json.dumps({"text": "x" * n}).encode() for n in (0, 1, 30, 2, 64, 5)]
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    (file,) = expand_inputs(str(path))
    for cut in range(1, file.size):
        pieces = [Piece(file, 0, cut), Piece(file, cut, None)]
        got = [p for piece in pieces for chunk in read_chunks(piece, ("text",), chunk_bytes)
               for _, p in iter_payloads(chunk)]
        assert got == lines, cut


def _bad_input(tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    good = ["x = 1\n", "def f():\n    pass\n", "print('ok')"]
    raw = [
        json.dumps({"text": good[0]}).encode(),
        b"{not json",
        json.dumps({"body": "no text key"}).encode(),
        json.dumps({"text": good[1]}).encode(),
        json.dumps({"text": ""}).encode(),
        b"",
        json.dumps([1, 2]).encode(),
        json.dumps({"text": 3}).encode(),
        b'{"text": "\xff\xfe"}',
        json.dumps({"text": good[2]}).encode(),
    ]
    source = tmp_path / "mixed.jsonl.gz"
    source.write_bytes(gzip.compress(b"\n".join(raw) + b"\n"))
    return source, good


def test_bad_records_are_counted_reported_by_line_and_skipped(spm_model, tmp_path):
    source, good = _bad_input(tmp_path)
    stats = preprocess(_options(source, tmp_path / "mixed", spm_model, workers=2))
    assert stats.documents == 3
    assert dict(stats.skipped) == {
        "malformed_json": 2, "missing_key": 1, "empty": 1, "blank_line": 1,
        "not_a_string": 1, "not_utf8": 1,
    }
    assert f"{source}:line 2: malformed_json" in stats.examples
    assert f"{source}:line 9: not_utf8" in stats.examples
    assert "mixed.jsonl.gz:line 5: empty" in stats.summary()
    expected = _megatron_lm_reference(good, spm_model, tmp_path / "expected")
    assert _same_bytes(str(tmp_path / "mixed_text_document"), expected)


def test_strict_stops_at_the_first_bad_record_and_writes_nothing(spm_model, tmp_path):
    source, _ = _bad_input(tmp_path)
    with pytest.raises(MegatronSotaError, match=r"mixed.jsonl.gz:line 2: malformed json.*--strict"):
        preprocess(_options(source, tmp_path / "mixed", spm_model, strict=True))
    assert sorted(p.name for p in tmp_path.iterdir() if "text_document" in p.name) == []


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_truncated_compressed_file_is_named_and_nothing_is_written(corpus, spm_model, tmp_path, suffix):
    import zstandard

    raw = corpus.read_bytes()
    packed = gzip.compress(raw) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(raw)
    source = tmp_path / f"cut{suffix}"
    source.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(MegatronSotaError, match=rf"cut{suffix}'.*damaged or truncated"):
        preprocess(_options(source, tmp_path / "cut", spm_model))
    assert not any("text_document" in p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_corrupt_compressed_file_is_named_and_nothing_is_written(corpus, spm_model, tmp_path, suffix):
    import zstandard

    raw = corpus.read_bytes()
    packed = bytearray(gzip.compress(raw) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(raw))
    # gzip: the first deflate block header becomes invalid (zlib.error); zstd: the first block's bytes.
    for i in (range(10, 11) if suffix.endswith(".gz") else range(12, 40)):
        packed[i] ^= 0xFF
    source = tmp_path / f"bad{suffix}"
    source.write_bytes(bytes(packed))
    with pytest.raises(MegatronSotaError, match=rf"bad{suffix}'.*damaged or truncated"):
        preprocess(_options(source, tmp_path / "bad", spm_model))
    assert not any("text_document" in p.name for p in tmp_path.iterdir())


def test_tokenizer_error_names_file_and_line_and_leaves_no_output(tmp_path):
    source = tmp_path / "ids.jsonl"
    lines = [json.dumps({"text": "1 2 3"})] * 50 + [json.dumps({"text": "1 999"})]
    source.write_text("\n".join(lines) + "\n")
    options = _options(source, tmp_path / "ids", None, tokenizer=TokenizerSpec("NullTokenizer", vocab_size=10))
    with pytest.raises(MegatronSotaError, match=r"ids.jsonl:line 51: .*999"):
        preprocess(options)
    assert not any("ids_text" in p.name for p in tmp_path.iterdir())


def test_interrupted_run_resumes_finished_partitions(corpus, spm_model, reference, tmp_path, monkeypatch):
    options = _options(corpus, tmp_path / "out", spm_model, partitions=4)
    real = preprocess_module._write_partition
    written = []

    def crash_in_third_partition(index, *args, **kwargs):
        if index == 2:
            raise KeyboardInterrupt  # as if the job were killed part-way
        written.append(index)
        return real(index, *args, **kwargs)

    monkeypatch.setattr(preprocess_module, "_write_partition", crash_in_third_partition)
    with pytest.raises(KeyboardInterrupt):
        preprocess(options)
    assert written == [0, 1]
    # No final pair exists to be mistaken for a complete output.
    assert not (tmp_path / "out_text_document.bin").exists()
    assert not (tmp_path / "out_text_document.idx").exists()

    written.clear()
    monkeypatch.setattr(
        preprocess_module,
        "_write_partition",
        lambda index, *a, **k: (written.append(index), real(index, *a, **k))[1],
    )
    stats = preprocess(options)
    assert written == [2, 3]
    assert stats.partitions_reused == 2
    assert stats.documents == MAX_FILES
    assert _same_bytes(str(tmp_path / "out_text_document"), reference)


def test_changed_settings_discard_finished_partitions(corpus, spm_model, tmp_path, monkeypatch):
    real = preprocess_module._write_partition

    def crash_after_first(index, *args, **kwargs):
        if index == 1:
            raise KeyboardInterrupt
        return real(index, *args, **kwargs)

    monkeypatch.setattr(preprocess_module, "_write_partition", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        preprocess(_options(corpus, tmp_path / "out", spm_model, partitions=3))
    monkeypatch.setattr(preprocess_module, "_write_partition", real)
    # Without --append-eod the finished partition would be wrong to reuse.
    stats = preprocess(_options(corpus, tmp_path / "out", spm_model, partitions=3, append_eod=False))
    assert stats.partitions_reused == 0
    dataset = IndexedDataset(str(tmp_path / "out_text_document"))
    processor = sentencepiece.SentencePieceProcessor(model_file=spm_model)
    first = json.loads(corpus.read_bytes().splitlines()[0])["text"]
    assert dataset[0].tolist() == processor.encode_as_ids(first)  # no EOS: not the old partition


def test_merge_of_pieces_equals_preprocessing_their_concatenation(docs, spm_model, reference, tmp_path):
    prefixes = []
    for part, rows in enumerate([docs[:10], docs[10:11], docs[11:]]):
        source = tmp_path / f"part{part}.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
        preprocess(_options(source, tmp_path / f"part{part}", spm_model))
        prefixes.append(str(tmp_path / f"part{part}_text_document"))
    documents, tokens = merge_datasets(prefixes, str(tmp_path / "merged"))
    assert documents == len(docs)
    assert _same_bytes(str(tmp_path / "merged"), reference)
    assert tokens == int(IndexedDataset(reference).sequence_lengths.sum())


def test_merge_refuses_shards_of_different_dtypes(spm_model, tmp_path):
    source = tmp_path / "ids.jsonl"
    source.write_text(json.dumps({"text": "1 2 3"}) + "\n")
    small = TokenizerSpec("NullTokenizer", vocab_size=10)
    large = TokenizerSpec("NullTokenizer", vocab_size=100_000)
    preprocess(_options(source, tmp_path / "small", None, tokenizer=small))
    preprocess(_options(source, tmp_path / "large", None, tokenizer=large))
    with pytest.raises(MegatronSotaError, match=r"large_text_document.idx: expected token dtype uint16.*int32"):
        merge_datasets([str(tmp_path / "small_text_document"), str(tmp_path / "large_text_document")],
                       str(tmp_path / "merged"))
    assert not (tmp_path / "merged.bin").exists()


def test_split_sentences_writes_one_sequence_per_sentence(spm_model, tmp_path):
    text = "First sentence here. Second one follows!\nThird? Yes."
    source = tmp_path / "s.jsonl"
    source.write_text(json.dumps({"text": text}) + "\n")
    preprocess(_options(source, tmp_path / "s", spm_model, split_sentences=True, keep_newlines=True))
    dataset = IndexedDataset(str(tmp_path / "s_text_sentence"))
    processor = sentencepiece.SentencePieceProcessor(model_file=spm_model)
    sentences = ["First sentence here. ", "Second one follows!\n", "Third? ", "Yes."]
    expected = [processor.encode_as_ids(s) for s in sentences]
    expected[-1] = expected[-1] + [processor.eos_id()]
    assert dataset.sequence_lengths.tolist() == [len(e) for e in expected]
    assert dataset.document_indices.tolist() == [0, 4]
    assert [dataset[i].tolist() for i in range(4)] == expected


def test_presplit_sentence_lists_and_several_keys_stay_aligned(spm_model, tmp_path):
    source = tmp_path / "k.jsonl"
    rows = [
        {"title": "A", "text": ["one. ", "two."]},
        {"title": "B", "text": ""},  # dropped for both keys
        {"title": "C", "text": "three"},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = preprocess(_options(source, tmp_path / "k", spm_model, json_keys=("title", "text")))
    assert stats.documents == 2
    titles = IndexedDataset(str(tmp_path / "k_title_document"))
    texts = IndexedDataset(str(tmp_path / "k_text_document"))
    assert len(titles) == 2 and texts.document_indices.tolist() == [0, 2, 3]
    processor = sentencepiece.SentencePieceProcessor(model_file=spm_model)
    assert texts[0].tolist() == processor.encode_as_ids("one. ")
    assert texts[1].tolist() == processor.encode_as_ids("two.") + [processor.eos_id()]


def test_cli_uses_megatron_flag_names_and_prints_a_summary(corpus, spm_model, reference, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "preprocess_data.py"),
         "--input", str(corpus), "--output-prefix", str(tmp_path / "cli"), "--json-keys", "text",
         "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", spm_model,
         "--append-eod", "--workers", "2", "--partitions", "2", "--log-interval", "10", "--no-progress"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"documents: {MAX_FILES}" in proc.stdout and "tokens/s" in proc.stdout
    assert _same_bytes(str(tmp_path / "cli_text_document"), reference)


def test_cli_reports_a_missing_input_in_one_line(tmp_path, capsys):
    args = ["--input", str(tmp_path / "nope.jsonl"), "--output-prefix", str(tmp_path / "x"),
            "--tokenizer-type", "NullTokenizer", "--vocab-size", "10"]
    code, _, err = run_tool("preprocess_data", args, capsys)
    assert code == 1
    assert err.strip().startswith("error: --input") and "nope.jsonl" in err
    assert list(tmp_path.iterdir()) == []


def test_existing_shard_pair_is_refused_before_any_work_unless_overwrite(tmp_path, capsys):
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    big.write_text("".join(json.dumps({"text": "1 2 3 4 5 6 7 8"}) + "\n" for _ in range(50)))
    small.write_text(json.dumps({"text": "1 2"}) + "\n")
    prefix = tmp_path / "corpus"
    pair = [tmp_path / f"corpus_text_document{ext}" for ext in (".bin", ".idx")]

    def preprocess_into_prefix(source, *flags):
        return run_tool("preprocess_data", ["--input", str(source), "--output-prefix", str(prefix), "--tokenizer-type",
                                            "NullTokenizer", "--vocab-size", "10", "--workers", "1", "--no-progress",
                                            *flags], capsys)

    assert preprocess_into_prefix(big)[0] == 0
    before = [path.read_bytes() for path in pair]
    code, _, err = preprocess_into_prefix(small)
    assert code == 1
    assert (f"--output-prefix {prefix}: {pair[0]} and {pair[1]} already exist; pass --overwrite to replace them"
            in err), err
    assert [path.read_bytes() for path in pair] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl", "corpus_text_document.bin",
                                                          "corpus_text_document.idx", "small.jsonl"]  # no work begun
    assert preprocess_into_prefix(small, "--overwrite")[0] == 0
    assert len(IndexedDataset(str(tmp_path / "corpus_text_document"))) == 1


def test_reader_stays_a_bounded_window_ahead_of_the_writer():
    # Memory is bounded by chunks in flight, not input size: the ordered map may not pull
    # more than `in_flight` items beyond what the writer has consumed.
    import itertools
    import multiprocessing

    pulled = []

    def endless():  # finite, so a reader that runs ahead fails the test instead of hanging
        for n in range(10_000):
            pulled.append(n)
            yield n

    with multiprocessing.Pool(2) as pool:
        results = preprocess_module._ordered_map(pool, abs, endless(), in_flight=4)
        for consumed, (item, value) in enumerate(itertools.islice(results, 50), start=1):
            assert item == value == consumed - 1
            assert len(pulled) <= consumed + 4
