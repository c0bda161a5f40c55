"""A curation config turned into datatrove stages: each a pipeline, a task count, and the folders it links.

filter → exact-dedup find → exact-dedup filter → MinHash buckets → clusters → MinHash filter → (tokenize → merge) → report.
It builds steps only; running them is executors.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter
from datatrove.utils.hashing import HashConfig

from megatron_sota.curation.config import CurateConfig
from megatron_sota.curation.filters import (
    CodeFilter,
    FastGopherRepetitionFilter,
    LanguageFilter,
    LengthFilter,
    ToxicityFilter,
)
from megatron_sota.curation.layout import RunLayout
from megatron_sota.curation.pii import PiiRedactor
from megatron_sota.curation.quality_score import QualityScorer
from megatron_sota.curation.quality_split import HighQualityCopy
from megatron_sota.curation.rank_reader import RankFileReader
from megatron_sota.curation.reader import AuditedReader
from megatron_sota.curation.report import BuildReport, ReportPlan
from megatron_sota.curation.staged_writer import StagedJsonlWriter
from megatron_sota.curation.tally import Tally, TokenCounter
from megatron_sota.curation.tokenize_steps import MergeShards, TokenizeShard
from megatron_sota.curation.word_split import SharedWordSplitter
from megatron_sota.data.encode_worker import TokenizerSpec

INPUT_TALLY = "input"


@dataclass
class Stage:
    name: str
    pipeline: list[PipelineStep]
    tasks: int


def tokenizer_spec(cfg: CurateConfig) -> TokenizerSpec | None:
    tok = cfg.tokenizer
    if tok.type is None:
        return None
    return TokenizerSpec(tok.type, tok.model, tok.vocab_file, tok.merge_file, tok.vocab_size)


def _word_language(cfg: CurateConfig) -> str:
    """The language whose word splitter and stop words the Gopher/C4/FineWeb rules use."""
    languages = cfg.filters.language.languages
    return languages[0] if cfg.filters.language.enabled and len(languages) == 1 else "en"


def word_splitter(cfg: CurateConfig) -> SharedWordSplitter:
    """What the Gopher/C4/FineWeb rules and the MinHash signature get as their ``language``: datatrove's word split
    for _word_language, done once per text and shared (word_split.py says why it is faster and still equal)."""
    return SharedWordSplitter(_word_language(cfg))


def content_filters(cfg: CurateConfig, layout: RunLayout) -> list[tuple[str, PipelineStep]]:
    """(label, filter) for every enabled filter, in order; each writes what it drops to rejected/<label>/."""
    f, lang = cfg.filters, word_splitter(cfg)

    def rejected(label: str) -> StagedJsonlWriter:
        return StagedJsonlWriter(layout.rejected(label), label=f"rejected {label}")

    candidates = [
        ("length", f.length.enabled, lambda w: LengthFilter(
            f.length.min_chars, f.length.max_chars, f.length.min_words, f.length.max_words, exclusion_writer=w)),
        ("language", f.language.enabled, lambda w: LanguageFilter(
            list(f.language.languages), f.language.min_score, exclusion_writer=w)),
        ("gopher_repetition", f.gopher_repetition.enabled, lambda w: FastGopherRepetitionFilter(
            dup_line_frac=f.gopher_repetition.dup_line_frac,
            dup_para_frac=f.gopher_repetition.dup_para_frac,
            dup_line_char_frac=f.gopher_repetition.dup_line_char_frac,
            dup_para_char_frac=f.gopher_repetition.dup_para_char_frac,
            top_n_grams=tuple((int(n), float(v)) for n, v in f.gopher_repetition.top_n_grams),
            dup_n_grams=tuple((int(n), float(v)) for n, v in f.gopher_repetition.dup_n_grams),
            exclusion_writer=w, language=lang)),
        ("gopher_quality", f.gopher_quality.enabled, lambda w: GopherQualityFilter(
            min_doc_words=f.gopher_quality.min_doc_words,
            max_doc_words=f.gopher_quality.max_doc_words,
            min_avg_word_length=f.gopher_quality.min_avg_word_length,
            max_avg_word_length=f.gopher_quality.max_avg_word_length,
            max_symbol_word_ratio=f.gopher_quality.max_symbol_word_ratio,
            max_bullet_lines_ratio=f.gopher_quality.max_bullet_lines_ratio,
            max_ellipsis_lines_ratio=f.gopher_quality.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=f.gopher_quality.max_non_alpha_words_ratio,
            min_stop_words=f.gopher_quality.min_stop_words,
            exclusion_writer=w, language=lang)),
        ("c4", f.c4.enabled, lambda w: C4QualityFilter(
            exclusion_writer=w,
            split_paragraph=f.c4.split_paragraph,
            remove_citations=f.c4.remove_citations,
            filter_no_terminal_punct=f.c4.filter_no_terminal_punct,
            min_num_sentences=f.c4.min_num_sentences,
            min_words_per_line=f.c4.min_words_per_line,
            max_word_length=f.c4.max_word_length,
            filter_lorem_ipsum=f.c4.filter_lorem_ipsum,
            filter_javascript=f.c4.filter_javascript,
            filter_curly_bracket=f.c4.filter_curly_bracket,
            filter_policy=f.c4.filter_policy,
            language=lang)),
        ("fineweb", f.fineweb.enabled, lambda w: FineWebQualityFilter(
            exclusion_writer=w,
            line_punct_thr=f.fineweb.line_punct_thr,
            line_punct_exclude_zero=f.fineweb.line_punct_exclude_zero,
            short_line_thr=f.fineweb.short_line_thr,
            short_line_length=f.fineweb.short_line_length,
            char_duplicates_ratio=f.fineweb.char_duplicates_ratio,
            new_line_ratio=f.fineweb.new_line_ratio,
            language=lang)),
        ("code", f.code.enabled, lambda w: CodeFilter(
            max_file_bytes=f.code.max_file_bytes,
            max_line_length=f.code.max_line_length,
            max_mean_line_length=f.code.max_mean_line_length,
            min_alphanumeric_fraction=f.code.min_alphanumeric_fraction,
            autogenerated_markers=tuple(f.code.autogenerated_markers),
            marker_lines=f.code.marker_lines,
            exclusion_writer=w)),
        ("toxicity", f.toxicity.enabled, lambda w: ToxicityFilter(
            max_toxic_fraction=f.toxicity.max_toxic_fraction,
            chunk_words=f.toxicity.chunk_words,
            chunk_threshold=f.toxicity.chunk_threshold,
            exclusion_writer=w)),
    ]
    return [(label, build(rejected(label))) for label, enabled, build in candidates if enabled]


def _exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=document_text, hash_config=HashConfig(precision=64, hash_fc="xxhash"))


def document_text(doc) -> str:  # module level: pickled by reference into SLURM jobs
    return doc.text


def minhash_config(cfg: CurateConfig) -> MinhashConfig:
    m = cfg.dedup.minhash
    return MinhashConfig(
        n_grams=m.n_grams, num_buckets=m.bands, hashes_per_bucket=m.rows, seed=m.seed,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )


def implied_threshold(bands: int, rows: int) -> float:
    """The Jaccard similarity at which two documents become candidates with probability ~1/2: (1/b)^(1/r)."""
    return (1.0 / bands) ** (1.0 / rows)


def plan_stages(cfg: CurateConfig, layout: RunLayout, files: list[tuple[str, str]]) -> list[Stage]:
    tasks = cfg.tasks
    labels = [INPUT_TALLY]
    filter_steps: list[PipelineStep] = [
        AuditedReader(files, layout.bad_input, cfg.source, cfg.input.text_key, cfg.input.id_key, cfg.strict),
        TokenCounter(tokenizer_spec(cfg)),
        Tally(INPUT_TALLY),
    ]
    filter_names = {}
    for label, step in content_filters(cfg, layout):
        filter_steps += [step, Tally(label)]
        labels.append(label)
        filter_names[label] = step.name
    if cfg.pii.enabled:
        p = cfg.pii
        filter_steps.append(PiiRedactor(p.emails, p.ip_addresses, p.phone_numbers, p.card_numbers))
    filter_steps.append(QualityScorer(dict(cfg.quality.weights) or None))
    stages = [Stage("filter", filter_steps, tasks)]
    current = layout.work("filtered")

    def hand_over(steps: list[PipelineStep], folder: str) -> None:
        """Ends a document stage by writing its survivors where the next one reads them."""
        nonlocal current
        steps.append(StagedJsonlWriter(folder, label=folder.rsplit("/", 1)[-1]))
        current = folder

    if cfg.dedup.exact:
        hand_over(filter_steps, layout.work("filtered"))
        filter_steps.append(ExactDedupSignature(layout.work("exact_signatures"), _exact_config()))
        stages.append(Stage("exact_find", [ExactFindDedups(
            layout.work("exact_signatures"), layout.work("exact_duplicates"), _exact_config())], 1))
        exact_steps: list[PipelineStep] = [
            RankFileReader(current),
            ExactDedupFilter(layout.work("exact_duplicates"), _exact_config(),
                             exclusion_writer=StagedJsonlWriter(layout.rejected("exact_dedup"))),
            Tally("exact_dedup"),
        ]
        labels.append("exact_dedup")
        stages.append(Stage("exact_filter", exact_steps, tasks))
        last_steps = exact_steps
    else:
        last_steps = filter_steps

    if cfg.dedup.minhash.enabled:
        mh = minhash_config(cfg)
        hand_over(last_steps, layout.work("exact_deduped") if cfg.dedup.exact else layout.work("filtered"))
        last_steps.append(
            MinhashDedupSignature(layout.work("minhash_signatures"), config=mh, language=word_splitter(cfg)))
        stages.append(Stage("minhash_buckets", [MinhashDedupBuckets(
            layout.work("minhash_signatures"), layout.work("minhash_buckets"), config=mh)], cfg.dedup.minhash.bands))
        stages.append(Stage("minhash_cluster", [MinhashDedupCluster(
            layout.work("minhash_buckets"), layout.work("minhash_clusters"), config=mh)], 1))
        final_steps: list[PipelineStep] = [
            RankFileReader(current),
            MinhashDedupFilter(layout.work("minhash_clusters"),
                               exclusion_writer=StagedJsonlWriter(layout.rejected("minhash"))),
            Tally("minhash"),
        ]
        labels.append("minhash")
        stages.append(Stage("minhash_filter", final_steps, tasks))
    else:
        final_steps = last_steps
    final_steps += [HighQualityCopy(layout.high_quality, cfg.quality.threshold),
                    StagedJsonlWriter(layout.documents, label="documents")]

    tokenized_prefix = None
    spec = tokenizer_spec(cfg)
    if cfg.tokenize.enabled and spec is not None:
        tokenized_prefix = layout.tokenized_prefix(cfg.tokenize.output_name)
        shards = layout.work("tokenized_shards")
        stages.append(Stage("tokenize", [TokenizeShard(layout.documents, shards, spec, cfg.tokenize.append_eod)], tasks))
        stages.append(Stage("merge", [MergeShards(shards, tasks, tokenized_prefix)], 1))

    plan = ReportPlan(
        source=cfg.source,
        stages=[s.name for s in stages],
        tallies=labels,
        token_unit=f"{cfg.tokenizer.type} tokens" if spec else "words",
        quality_threshold=cfg.quality.threshold,
        minhash=(
            {"n_grams": cfg.dedup.minhash.n_grams, "bands": cfg.dedup.minhash.bands, "rows": cfg.dedup.minhash.rows,
             "implied_threshold": round(implied_threshold(cfg.dedup.minhash.bands, cfg.dedup.minhash.rows), 4)}
            if cfg.dedup.minhash.enabled else None
        ),
        tokenized_prefix=tokenized_prefix,
        filter_steps=filter_names,
    )
    stages.append(Stage("report", [BuildReport(layout, plan)], 1))
    return stages
