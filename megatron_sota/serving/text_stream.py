"""A completion's text as its tokens arrive: the new text that is safe to send, and where a stop string ends it.

One TextStream per completion; it detokenizes and matches stop strings only, and must not know about requests or HTTP.

Text is sent only once it cannot change: a tail that decodes to U+FFFD (a multi-byte character whose remaining bytes
are still to come) and a tail that could be the start of a stop string are held back. The text of a finished
completion is `tokenizer.detokenize(new tokens without the stop token)` cut before the first stop string, the text
`tools/generate.py` gives; the deltas sent add up to it exactly.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

REPLACEMENT = "\ufffd"
"""What a decoder gives for bytes that are not (yet) a whole UTF-8 character."""


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._ids: List[int] = []
        self._sent = ""
        self.text = ""
        """The completion's text so far (final once `stopped` or `finish` was called)."""
        self.stopped = False
        """A stop string was found: the text ends before it and later tokens are ignored."""

    def add(self, token: int) -> str:
        """The text newly safe to send after `token` ("" while held back or after a stop string)."""
        if self.stopped:
            return ""
        self._ids.append(int(token))
        self.text = self._tokenizer.detokenize(self._ids)
        cut = self._first_stop(self.text)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return self._send(len(self.text))
        return self._send(len(self.text) - self._held_back(self.text))

    def finish(self, drop_last: bool = False) -> str:
        """The rest of the text once generation ended; `drop_last`: the last token was a stop token, not text."""
        if not self.stopped:
            ids = self._ids[:-1] if drop_last and self._ids else self._ids
            self.text = self._tokenizer.detokenize(ids)
            cut = self._first_stop(self.text)
            if cut is not None:
                self.text, self.stopped = self.text[:cut], True
        return self._send(len(self.text))

    def _send(self, end: int) -> str:
        if end <= len(self._sent) or not self.text.startswith(self._sent):
            # Nothing new, or a decoder that rewrote text already sent (none of ours does): send nothing more now.
            return ""
        delta = self.text[len(self._sent) : end]
        self._sent += delta
        return delta

    def _first_stop(self, text: str) -> Optional[int]:
        found = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        """Characters at the end of `text` that may still change: undecoded bytes, and before them the start of a
        stop string (the undecoded bytes may be the rest of it)."""
        decoded = text.rstrip(REPLACEMENT)
        undecoded = len(text) - len(decoded)
        longest = 0
        for stop in self._stop:
            longest = max([longest] + [n for n in range(1, min(len(stop) - 1, len(decoded)) + 1)
                                       if decoded.endswith(stop[:n])])
        return undecoded + longest
