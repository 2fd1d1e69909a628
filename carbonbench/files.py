"""File names and writes that can't go wrong halfway: the one place files are written.

Every whole-file write goes to a temporary file in the same directory, is synced, and
is renamed over the target, so a reader never sees half a file whatever happens to the
process. Names built from user text (scenario names, host names) pass ``safe_name``
first, so they can never climb out of the directory they are meant for.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name fragment from user text: no separators, no '..', never empty."""
    name = _SAFE.sub("-", text).strip(".-")
    name = re.sub(r"\.{2,}", ".", name)
    return (name[:max_len].strip(".-")) or "run"[: max(max_len, 1)]  # idempotent even for max_len < 3


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the whole file to; renamed over ``path``
    when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
