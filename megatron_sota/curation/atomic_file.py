"""Small files (audits, reports) written under a temporary name and renamed: a reader sees all or nothing.

For the run's small bookkeeping files only; document outputs go through staged_writer.py.
"""

from __future__ import annotations

import os


def write_text_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
