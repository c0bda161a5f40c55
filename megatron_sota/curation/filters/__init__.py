"""Document filters for the data-curation pipeline (datatrove steps): length, language, code, toxicity, and
datatrove's Gopher repetition rule with faster n-gram statistics.

Re-exports only; it must not import models (each filter loads its own lazily).
"""

from megatron_sota.curation.filters.code import CodeFilter
from megatron_sota.curation.filters.language import LanguageFilter
from megatron_sota.curation.filters.length import LengthFilter
from megatron_sota.curation.filters.repetition import FastGopherRepetitionFilter
from megatron_sota.curation.filters.toxicity import ToxicityFilter

__all__ = ["CodeFilter", "FastGopherRepetitionFilter", "LanguageFilter", "LengthFilter", "ToxicityFilter"]
