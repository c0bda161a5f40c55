"""The interface every tokenizer type of ours provides, as a base class of our own rather than megatron-core's.

It declares what megatron-core's datasets and our tools read from a tokenizer; it must not load or run one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any


class DatasetTokenizer(ABC):
    """A tokenizer megatron-core's GPT datasets accept (GPTDatasetConfig.tokenizer) and our tools use.

    megatron-core 0.16.1 to 0.19 read `vocab_size`, `eod`, `eos`, `pad` and `unique_identifiers`
    (optional ones inside try/except); preprocessing, evaluation, generation and export read the rest.
    """

    def __init__(self, *tokenizer_paths: str, **options: Any) -> None:
        # The datasets hash this into the names of their cached index files. The layout is that of
        # megatron-core's former MegatronLegacyTokenizer, so caches written before keep being found.
        self.unique_identifiers: OrderedDict[str, Any] = OrderedDict()
        self.unique_identifiers["class"] = type(self).__name__
        self.unique_identifiers["tokenizer_path"] = list(tokenizer_paths)
        for name, value in options.items():
            self.unique_identifiers[name] = str(value)

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """The ids of one document's text, without any special token added."""

    @abstractmethod
    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """tokenize() of each text, one thread per process."""

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of `ids`."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce is below this."""

    @property
    @abstractmethod
    def vocab(self) -> dict[Any, int]:
        """Token -> id."""

    @property
    @abstractmethod
    def inv_vocab(self) -> dict[int, Any]:
        """Id -> token."""

    @property
    @abstractmethod
    def eod(self) -> int:
        """The id that ends a document in the datasets."""

    @property
    @abstractmethod
    def eos(self) -> int:
        """The tokenizer's own end-of-sequence id."""

    @property
    @abstractmethod
    def pad(self) -> int:
        """The id of padded positions."""
