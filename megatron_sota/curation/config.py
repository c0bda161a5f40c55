"""Typed configuration of a curation run (tools/curate.py, conf/curate/*.yaml).

Every threshold of every filter lives here with its meaning; the pipeline code reads only these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_sota.config.run import TokenizerConfig


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)
    """Files, globs or directories of .jsonl, .jsonl.gz, .jsonl.zst or .parquet (directories are searched)."""
    text_key: str = "text"
    """Field (parquet column) holding the document text."""
    id_key: str = "id"
    """Field holding the document id (the file path and line number when absent)."""


@dataclass
class ExecutorConfig:
    kind: str = "local"
    """local (processes on this machine) or slurm (datatrove's SLURM executor: one job array per stage)."""
    workers: int = -1
    """Tasks running at once: local processes (-1: all cores), or the SLURM array's %limit (-1: no limit)."""
    partition: Optional[str] = None
    """slurm: the partition every stage is submitted to (the cluster's default when null)."""
    time: str = "24:00:00"
    """slurm: time limit per array task."""
    cpus_per_task: int = 1
    """slurm: CPUs per array task (the document stages are single-threaded per task)."""
    mem_per_cpu_gb: int = 2
    """slurm: memory per CPU in GB."""
    job_name: str = "curate"
    """slurm: prefix of every stage's job name (curate-filter, curate-minhash-buckets, ...)."""
    env_command: Optional[str] = None
    """slurm: shell line run before each task (e.g. `source /venv/bin/activate`); the submitting
    environment is exported to the jobs, so on a shared filesystem none is usually needed."""
    sbatch_args: dict[str, str] = field(default_factory=dict)
    """slurm: extra #SBATCH options, e.g. {account: myproj, qos: normal}."""
    wait: bool = True
    """slurm: block until the final report exists (false: submit and return, print the job ids)."""
    poll_seconds: float = 2.0
    """slurm: how often to look at the queue while waiting."""


@dataclass
class LengthConfig:
    enabled: bool = True
    min_chars: int = 200
    max_chars: Optional[int] = 1_000_000
    min_words: int = 50
    max_words: Optional[int] = 200_000


@dataclass
class LanguageConfig:
    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    """ISO 639 codes kept (fastText lid.176 labels); empty: keep every language, only annotate."""
    min_score: float = 0.65
    """fastText probability of the top language below which a document is dropped."""


@dataclass
class GopherRepetitionConfig:
    """Gopher (Rae et al. 2021, table A1) repetition limits; datatrove's GopherRepetitionFilter
    (filters/repetition.py computes its n-gram statistics faster, with the same verdicts)."""

    enabled: bool = True
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: list[list[float]] = field(default_factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]])
    """[n, max fraction of characters in the most frequent n-gram]."""
    dup_n_grams: list[list[float]] = field(
        default_factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]
    )
    """[n, max fraction of characters in duplicated n-grams]."""


@dataclass
class GopherQualityConfig:
    """Gopher quality rules; datatrove's GopherQualityFilter (English word splitting: spaCy's blank tokenizer)."""

    enabled: bool = True
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: int = 3
    max_avg_word_length: int = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2


@dataclass
class C4Config:
    """C4 (Raffel et al. 2020) rules; datatrove's C4QualityFilter. Lines failing a line rule are removed,
    the document is dropped when a document rule fails."""

    enabled: bool = True
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = False
    """Off by default as in FineWeb: it removes too many good lines of web text."""
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@dataclass
class FineWebConfig:
    """FineWeb (Penedo et al. 2024) line rules; datatrove's FineWebQualityFilter."""

    enabled: bool = True
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@dataclass
class CodeConfig:
    """Source-code heuristics (The Stack / StarCoder style), for the code source."""

    enabled: bool = False
    max_file_bytes: int = 1_000_000
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alphanumeric_fraction: float = 0.25
    autogenerated_markers: list[str] = field(
        default_factory=lambda: ["auto-generated", "autogenerated", "automatically generated", "generated by", "do not edit"]
    )
    marker_lines: int = 5
    """Only the first lines are searched for the markers (a header comment)."""


@dataclass
class ToxicityConfig:
    """alt-profanity-check's offline linear model, scored on chunks of a document."""

    enabled: bool = True
    max_toxic_fraction: float = 0.05
    """A document is dropped when more than this fraction of its chunks is toxic."""
    chunk_words: int = 64
    chunk_threshold: float = 0.8
    """A chunk is toxic when the model's probability is at least this."""


@dataclass
class FiltersConfig:
    """The filters in the order they run (cheap ones first, so expensive ones see fewer documents)."""

    length: LengthConfig = field(default_factory=LengthConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)


@dataclass
class PiiConfig:
    """Redaction with fixed placeholders (<EMAIL>, <IP_ADDRESS>, <PHONE>, <CARD_NUMBER>); never drops."""

    enabled: bool = True
    emails: bool = True
    ip_addresses: bool = True
    phone_numbers: bool = True
    card_numbers: bool = True
    """Only digit runs that pass the Luhn check."""


@dataclass
class QualityConfig:
    threshold: float = 0.7
    """Documents scoring at least this also go to high_quality/ (the pretraining stage-3 blend)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Signal -> weight of the score (megatron_sota/curation/quality_score.py); empty: the prose defaults."""


@dataclass
class MinhashConfig:
    enabled: bool = True
    n_grams: int = 5
    """Word n-gram (shingle) size."""
    bands: int = 14
    """Buckets: two documents are candidates when all hashes of one band agree."""
    rows: int = 8
    """Hashes per band. The implied Jaccard threshold is (1/bands)^(1/rows): 0.72 for 14 x 8."""
    seed: int = 1


@dataclass
class DedupConfig:
    exact: bool = True
    """Drop byte-identical texts (after PII redaction), keeping the first."""
    minhash: MinhashConfig = field(default_factory=MinhashConfig)


@dataclass
class TokenizeConfig:
    enabled: bool = False
    """Also write the kept documents as Megatron .bin/.idx (through tools/preprocess_data.py's code)."""
    append_eod: bool = True
    output_name: str = "curated"
    """Writes tokenized/<output_name>_text_document.bin/.idx."""


@dataclass
class CurateConfig:
    source: str = "web"
    """The source type this config is for (web, code, papers, books, dialogue); labels the report."""
    input: InputConfig = field(default_factory=InputConfig)
    output_dir: str = "curated"
    """Everything a run writes: documents/, high_quality/, rejected/<filter>/, report.*, work/, logs/."""
    tasks: int = 4
    """Parallel slices of the input (files are dealt to tasks); the dedup stages keep this split."""
    strict: bool = False
    """Unreadable files, malformed lines and missing text keys stop the run instead of being counted."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Counts the report's tokens and writes .bin/.idx; with no type, the report counts words instead."""
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)


def register_curate_schema() -> None:
    """Registers CurateConfig as ``curate_schema``, the first defaults entry of every conf/curate/<source>.yaml."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="curate_schema", node=CurateConfig)
