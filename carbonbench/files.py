"""File names and writes that can't go wrong halfway: the one place files are written.

Every whole-file write goes to a temporary file in the same directory, is synced, and
is renamed over the target, so a reader never sees half a file whatever happens to the
process. An append (a run's point journal, its power timeline) is one write, synced,
and cut back off should it fail partway. A write that fails (a full disk, a read-only
target) raises ``WriteError``, which names the file and the errno in one line.

Names built from user text (scenario names, host names) pass ``safe_name`` first, so
they can never climb out of the directory they are meant for. ``LockFile`` is the one
exclusive lock a run takes on its files.

Every call to the operating system goes through this module's ``os``, so a test can
stand a full disk or a read-only directory in for it (tests/support/faults.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from carbonbench.errors import UserError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Errnos that say the target is wrong (the user picks another), not that the disk failed.
_TARGET_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name fragment from user text: no separators, no '..', never empty."""
    name = _SAFE.sub("-", text).strip(".-")
    name = re.sub(r"\.{2,}", ".", name)
    return (name[:max_len].strip(".-")) or "run"[: max(max_len, 1)]  # idempotent even for max_len < 3


class WriteError(OSError):
    """A file that could not be written, and why: ``str()`` is the one line to show."""

    def __init__(self, path: str | Path, exc: OSError):
        super().__init__(exc.errno, exc.strerror or str(exc), str(path))

    def __str__(self) -> str:
        code = f"errno {self.errno}, {errno.errorcode.get(self.errno, '?')}" if self.errno else "no errno"
        return f"cannot write {self.filename}: {self.strerror} ({code})"

    @property
    def exit_status(self) -> int:
        """2 when the target is the user's to change (read-only, no permission), else 1."""
        return 2 if self.errno in _TARGET_ERRNOS else 1


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the whole file to; synced and renamed
    over ``path`` when the block succeeds, removed when it fails. An OSError leaves as
    WriteError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(path)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:
        yield tmp
        # Synced before the rename: a full disk often says so only here (delayed
        # allocation), and a crash must not leave an empty file under the real name.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from exc
        raise


def append_bytes(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` in one synced write; on failure the file is cut back
    to its old length, so a later append never lands after half a line."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise WriteError(path, exc) from exc
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Remove a file if it is there; the directory entry is synced first, so that the
    rename that made this file redundant is on disk before the file is gone."""
    with contextlib.suppress(OSError):
        fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _temp_beside(path: Path) -> Path:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


# -- one process at a time ----------------------------------------------------------------
class LockHeld(UserError):
    """Another live process holds the lock (exit status 2: wait for it, or stop it)."""


class LockFile:
    """An exclusive lock: a file created with O_EXCL, holding the holder's pid and host.

    A lock whose holder is gone (same host, no such pid) is taken over; one held on
    another host cannot be checked from here, so it is refused, naming the holder.
    """

    STALE_GUARD_S = 10.0  # a lock still empty, or a takeover still unfinished, after this: its writer died

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        self.held = False

    def acquire(self) -> Optional[dict]:
        """Take the lock; the holder it took over from (a dead process), if any."""
        took_over = None
        text = (
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            + "\n"
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError(self.path, exc) from exc
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                seen, holder = self._holder()
                if not self._stale(holder):
                    raise LockHeld(self._refusal(holder)) from None
                self._take_over(seen)
                took_over = holder or took_over
                continue
            except OSError as exc:
                raise WriteError(self.path, exc) from exc
            try:
                _write_all(fd, text.encode())
                os.fsync(fd)
            except OSError as exc:
                os.close(fd)
                remove(self.path)
                raise WriteError(self.path, exc) from exc
            os.close(fd)
            self.held = True
            return took_over
        raise LockHeld(f"{self.what}: could not take the lock {self.path} (other processes keep taking it)")

    def release(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _holder(self) -> tuple[Optional[str], Optional[dict]]:
        try:
            seen = Path(self.path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None, None
        try:
            holder = json.loads(seen)
        except ValueError:
            return seen, None
        return seen, holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None

    def _stale(self, holder: Optional[dict]) -> bool:
        if holder is None:  # empty or unreadable: being written now, or its writer died doing so
            return _age_s(self.path) > self.STALE_GUARD_S
        if holder.get("host") != socket.gethostname():
            return False
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except OSError:  # EPERM: alive, another user's
            return False
        return False

    def _take_over(self, seen: Optional[str]) -> None:
        """Remove the stale lock, unless another process took it over first."""
        # Two processes may find the same stale lock: only one may remove it, and only it,
        # never the fresh lock the other may have taken meanwhile.
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            if _age_s(guard) > self.STALE_GUARD_S:
                with contextlib.suppress(OSError):
                    os.unlink(guard)
            time.sleep(0.01)
            return
        try:
            now, _ = self._holder()
            if now == seen:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(guard)

    def _refusal(self, holder: Optional[dict]) -> str:
        if holder is None:
            who = "a process that is still writing the lock"
        else:
            who = f"pid {holder['pid']} on {holder.get('host')}, since {holder.get('since_utc')}"
        return (
            f"{self.what} is in use by another carbonbench run ({who}); wait for it to end, "
            f"or delete {self.path} if that process is gone"
        )


def _age_s(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0
