"""Fault injection for writes: a disk that fills up, a directory that turns read-only.

carbonbench writes every file through carbonbench.files, and carbonbench.files calls the
operating system through its own name ``os``. ``FaultyDisk`` stands in for that name
only (monkeypatched at the import site), so the faults hit exactly the writes the
program makes, with the errno a real kernel gives, and nothing else in the process.

    disk = FaultyDisk(monkeypatch)
    disk.fill(out_dir)                 # ENOSPC for every write under out_dir
    disk.fill(out_dir, after=1, matching=".points.jsonl")   # ... once one journal write got through
    disk.make_read_only(out_dir)       # EROFS for every file created or renamed there
    disk.free()
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

import carbonbench.files

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class FaultyDisk:
    def __init__(self, monkeypatch):
        self._real = os
        self._fds: dict[int, Path] = {}
        self._full: Optional[Path] = None
        self._full_after: Optional[tuple[int, str]] = None
        self._read_only: set[Path] = set()
        self._spill = False  # the write that fills the disk gets half its bytes in, as on a real one
        self.failures: list[tuple[str, int]] = []  # (path, errno) of every write refused
        monkeypatch.setattr(carbonbench.files, "os", self)

    # -- the faults ----------------------------------------------------------------------
    def fill(self, under: Path, *, after: int = 0, matching: str = "") -> None:
        """Writes under ``under`` fail with ENOSPC, after ``after`` more writes (synced) to
        files whose name contains ``matching`` got through."""
        self._full = Path(under).resolve()
        self._full_after = (after, matching) if after else None
        self._spill = True

    def make_read_only(self, directory: Path) -> None:
        self._read_only.add(Path(directory).resolve())

    def free(self) -> None:
        self._full, self._full_after, self._read_only = None, None, set()

    # -- the os module, as carbonbench.files sees it -------------------------------------
    def __getattr__(self, name):
        return getattr(self._real, name)

    def open(self, path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS and self._is_read_only(path):
            self._refuse(path, errno.EROFS)
        fd = self._real.open(path, flags, mode, dir_fd=dir_fd)
        self._fds[fd] = Path(path)
        return fd

    def close(self, fd):
        self._fds.pop(fd, None)
        return self._real.close(fd)

    def write(self, fd, data):
        path = self._fds.get(fd)
        if path is not None and self._is_full(path):
            if self._spill and len(data) > 1:
                self._spill = False
                return self._real.write(fd, bytes(data[: len(data) // 2]))
            self._refuse(path, errno.ENOSPC)
        return self._real.write(fd, data)

    def fsync(self, fd):
        path = self._fds.get(fd)
        if path is not None and self._is_full(path):  # delayed allocation: the disk says so only now
            self._refuse(path, errno.ENOSPC)
        self._real.fsync(fd)
        if path is not None and self._full_after is not None:  # one more write got through, whole
            left, matching = self._full_after
            if matching in path.name:
                self._full_after = (left - 1, matching) if left > 1 else None

    def replace(self, src, dst, **kwargs):
        if self._is_read_only(dst):
            self._refuse(dst, errno.EROFS)
        return self._real.replace(src, dst, **kwargs)

    # -- helpers -------------------------------------------------------------------------
    def _is_full(self, path: Path) -> bool:
        return self._full is not None and self._full_after is None and _under(path, self._full)

    def _is_read_only(self, path) -> bool:
        return any(_under(Path(path), d) for d in self._read_only)

    def _refuse(self, path, code: int):
        self.failures.append((str(path), code))
        raise OSError(code, os.strerror(code), str(path))


def _under(path: Path, directory: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).resolve().is_relative_to(directory)
    except OSError:
        return False
