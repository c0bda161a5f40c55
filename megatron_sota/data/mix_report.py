"""The realised data mix of a run: samples per source and prefix, read from megatron-core's blend indices.

Counts come from the built BlendedDataset (what the run will actually read), never from the weights;
this module writes data_mix.json / data_mix.png and formats the start-up table, nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy
from megatron.core.datasets.blended_dataset import BlendedDataset

from megatron_sota.data.mix import ResolvedBlend

JSON_NAME = "data_mix.json"
PNG_NAME = "data_mix.png"


@dataclass(frozen=True)
class PrefixMix:
    source: str
    prefix: str
    config_key: str
    target_share: float
    tokens: int
    """Tokens in the whole shard (all splits)."""
    documents: int
    samples: dict[str, int]
    """Split name -> samples of the run drawn from this prefix."""


@dataclass(frozen=True)
class SourceMix:
    name: str
    target_share: float
    samples: dict[str, int]
    share: dict[str, float]
    """Split name -> realised fraction of that split's samples."""


@dataclass(frozen=True)
class DataMixReport:
    seq_length: int
    split_samples: dict[str, int]
    """Split name -> samples the run reads from it (train: iters x global batch)."""
    sources: list[SourceMix]
    prefixes: list[PrefixMix]


def drawn_per_entry(dataset, blend: ResolvedBlend, samples: int) -> list[int]:
    """How many of the dataset's first `samples` samples come from each blend entry."""
    if not isinstance(dataset, BlendedDataset):
        return [samples]  # one prefix without a blend: megatron-core returns its GPTDataset itself
    found = [d.dataset_path for d in dataset.datasets]
    if found != blend.prefixes:
        raise RuntimeError(f"BlendedDataset holds {found}, expected the blend's prefixes {blend.prefixes}")
    index = numpy.asarray(dataset.dataset_index[:samples])
    if len(index) < samples:
        raise RuntimeError(f"BlendedDataset has {len(index)} samples, the run reads {samples}")
    return numpy.bincount(index, minlength=len(blend.entries)).tolist()


def data_mix_report(
    blend: ResolvedBlend, splits: dict[str, tuple[object, int]], seq_length: int
) -> DataMixReport:
    """`splits`: split name -> (megatron-core dataset, samples the run reads from it)."""
    drawn = {name: drawn_per_entry(ds, blend, n) for name, (ds, n) in splits.items() if ds is not None and n > 0}
    prefixes = [
        PrefixMix(
            source=e.source, prefix=e.prefix, config_key=e.config_key, target_share=e.share,
            tokens=e.tokens, documents=e.documents, samples={name: counts[i] for name, counts in drawn.items()},
        )
        for i, e in enumerate(blend.entries)
    ]
    split_samples = {name: sum(counts) for name, counts in drawn.items()}
    sources = []
    for name, target in blend.source_shares.items():
        samples = {split: sum(p.samples[split] for p in prefixes if p.source == name) for split in drawn}
        share = {split: n / split_samples[split] if split_samples[split] else 0.0 for split, n in samples.items()}
        sources.append(SourceMix(name=name, target_share=target, samples=samples, share=share))
    return DataMixReport(seq_length=seq_length, split_samples=split_samples, sources=sources, prefixes=prefixes)


def format_data_mix(report: DataMixReport) -> str:
    """The start-up table: per source its target and realised share, indented rows per prefix."""
    splits = list(report.split_samples)
    totals = ", ".join(f"{s} {n:,}" for s, n in report.split_samples.items())
    header = f"  {'source / prefix':<44} {'target':>7}" + "".join(f" {s + ' samples':>15} {'share':>7}" for s in splits)
    title = (
        f"data mix: {len(report.sources)} sources, {len(report.prefixes)} prefixes; samples of "
        f"{report.seq_length} tokens read per split: {totals}"
    )
    lines = [title, header]

    def row(label: str, target: float, samples: dict[str, int]) -> str:
        cells = "".join(
            f" {samples[s]:>15,} {samples[s] / report.split_samples[s] if report.split_samples[s] else 0:>7.2%}"
            for s in splits
        )
        return f"  {label:<44} {target:>7.2%}{cells}"

    for source in report.sources:
        lines.append(row(source.name, source.target_share, source.samples))
        for p in (p for p in report.prefixes if p.source == source.name):
            lines.append(row("    " + _short(os.path.basename(p.prefix), 40), p.target_share, p.samples))
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def write_data_mix(report: DataMixReport, run_dir: str) -> tuple[str, str]:
    """Writes <run_dir>/data_mix.json and data_mix.png; returns their paths."""
    os.makedirs(run_dir, exist_ok=True)
    json_path, png_path = os.path.join(run_dir, JSON_NAME), os.path.join(run_dir, PNG_NAME)
    with open(json_path, "w") as handle:
        json.dump(asdict(report), handle, indent=2)
        handle.write("\n")
    plot_data_mix(report, png_path)
    return json_path, png_path


def plot_data_mix(report: DataMixReport, path: str, split: str | None = "train") -> None:
    """Bar chart: target vs realised share of each source in `split`."""
    # Figure + Agg canvas rather than pyplot: no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    split = split if split in report.split_samples else next(iter(report.split_samples), None)
    names = [s.name for s in report.sources]
    x = numpy.arange(len(names))
    figure = Figure(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.bar(x - 0.2, [100 * s.target_share for s in report.sources], 0.4, label="target")
    if split is not None:
        realised = axes.bar(x + 0.2, [100 * s.share[split] for s in report.sources], 0.4, label=f"realised ({split})")
        axes.bar_label(realised, labels=[f"{s.samples[split]:,}" for s in report.sources], fontsize=8)
        axes.set_title(f"data mix of the run's {report.split_samples[split]:,} {split} samples\n"
                       "target vs realised share per source (bar labels: samples)", fontsize=10)
    axes.margins(y=0.12)
    axes.set_xticks(x, names, rotation=20, ha="right")
    axes.set_ylabel("% of samples")
    axes.legend()
    figure.savefig(path, dpi=110)
