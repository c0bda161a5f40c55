"""The one way this project replaces a file: write a temporary sibling, flush it to disk, rename it over the target.

A reader (or a crash) sees the old file or the new one, never a torn one. Directory outputs are staged elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_output(path: str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yields a handle on a temporary file beside `path`; on a clean exit it replaces `path`.

    On an exception the temporary file is removed and `path` is left as it was. The temporary
    name is unique, so two writers of the same target never share one.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.exists(path):  # keep the target's permissions (mkstemp creates 0600)
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def write_json(path: str, obj: Any, indent: int | None = 2, **dumps_kwargs: Any) -> None:
    """`obj` as JSON plus a final newline (dumps_kwargs: sort_keys, allow_nan, ensure_ascii...)."""
    write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n")
