"""The one safe way to read a file a user gives, and to print what came out of it.

Every read of a user's file goes through ``read_text``/``read_bytes``: a regular file
only (a named pipe would block forever, /dev/zero never ends), and no more than a cap
per kind of file. Directories are walked by ``walk_files``, without recursion. JSON is
parsed strictly by ``parse_json`` (no repeated keys, finite numbers). Text from files is
made safe to print by ``printable``. Writing is carbonbench.files.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterator

from carbonbench.errors import UserError

# Caps on what is read, far above any real file of each kind, so that a sparse file or
# an endless stream is refused at once instead of filling memory.
MB = 1 << 20
MAX_YAML = 8 * MB  # scenarios, model cards, hardware files
MAX_CONFIG = 16 * MB  # a checkpoint's config.json and shard index
MAX_TOKENIZER = 256 * MB  # tokenizer.json, vocab.json, merges.txt
MAX_PROMPTS = 256 * MB
MAX_RESULT = 512 * MB  # a run file of thousands of points, every rank's share recorded
MAX_TIMELINE = 512 * MB  # a run of days at ten samples a second

_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class UnreadableFile(UserError):
    """A file that cannot be read as asked: missing, not a regular file, too large, not text.

    ``reason`` is one of missing, directory, special, large, unreadable; ``worded(what)``
    gives the line with the caller's name for the file ("result file"), so each caller
    can raise its own UserError subclass in its own words.
    """

    def __init__(self, path: Path, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = Path(path), reason, detail
        super().__init__(self.worded("file"))

    @property
    def missing(self) -> bool:
        return self.reason == "missing"

    def worded(self, what: str) -> str:
        return f"{self.path}: {self.phrase(what)}"

    def phrase(self, what: str = "file") -> str:
        """The reason without the path: 'not a regular file (a named pipe)'."""
        d = self.detail
        return {
            "missing": f"{what} not found",
            "directory": f"is a directory, not a {what}",
            "special": f"not a regular file ({d})",
            "large": f"too large ({d})",
        }.get(self.reason, f"cannot read {what} ({d})")


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")


def _refuse_mode(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableFile(path, "directory")
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(path, "special", kind_of(st.st_mode))


def check_regular(path: str | Path) -> os.stat_result:
    """The stat of path (links followed) if it is a regular file; else UnreadableFile."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnreadableFile(path, "missing") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise UnreadableFile(path, "unreadable", _why(exc)) from None
    _refuse_mode(path, st)
    return st


def read_bytes(path: str | Path, max_bytes: int) -> bytes:
    """The whole of a regular file of at most max_bytes; never blocks, never reads past the cap.

    Opened without blocking (a named pipe with no writer would block a plain open forever)
    and checked on the open descriptor, so the file checked is the file read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFile(path, "missing") from None
    except (OSError, ValueError) as exc:
        raise UnreadableFile(path, "unreadable", _why(exc)) from None
    try:
        st = os.fstat(fd)
        _refuse_mode(path, st)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb", buffering=0) as f:
        if st.st_size > max_bytes:
            raise UnreadableFile(path, "large", f"{_size(st.st_size)}; at most {_size(max_bytes)} is read")
        chunks, total = [], 0
        try:
            while total <= max_bytes:  # the file may grow while it is read
                chunk = f.read(min(MB, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise UnreadableFile(path, "unreadable", _why(exc)) from None
    if total > max_bytes:
        raise UnreadableFile(path, "large", f"more than {_size(max_bytes)}")
    return b"".join(chunks)


def read_text(path: str | Path, max_bytes: int) -> str:
    """read_bytes as UTF-8 text (a byte-order mark is dropped)."""
    data = read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(Path(path), "unreadable", f"not UTF-8 text: byte {exc.start}") from None


def walk_files(root: Path, suffix: str) -> Iterator[Path]:
    """Files under root whose names end with suffix, sorted, without recursion.

    Depth-first with an explicit stack, so a tree nested thousands deep costs a list,
    not Python's recursion limit. Symlinked directories are not entered (a link to an
    ancestor would loop); symlinked files are yielded, and are checked when read.
    Hidden entries (temporary files of atomic writes) are left out.
    """
    stack = [Path(root)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise UnreadableFile(directory, "unreadable", f"cannot list it: {_why(exc)}") from None
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(Path(entry.path))
            elif entry.name.endswith(suffix):
                yield Path(entry.path)
        stack.extend(reversed(subdirs))


# -- JSON, strictly -----------------------------------------------------------------------------
MAX_JSON_NUMBER = 1e30  # above any real count of tokens, FLOPs, bytes or joules
_MAX_INT_DIGITS = 64


class JSONContentError(ValueError):
    """Well-formed JSON whose content is refused; ``where`` is the key path ("" at the top)."""

    def __init__(self, where: str, why: str):
        self.where, self.why = where, why
        super().__init__(f"{where or '(top level)'}: {why}")


class _Pairs(dict):
    """An object that named a key twice (json keeps the last silently): the first repeat."""

    duplicate: str = ""


def _pairs(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set = set()
    marked = _Pairs(out)
    marked.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
    return marked


def _bounded_int(text: str) -> Any:
    # int() of a 5000-digit string raises ValueError (Python's 4300-digit limit); past
    # 64 digits a number is no count of anything, so it becomes inf, refused as not finite.
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else math.inf


def parse_json(text: str, *, finite: bool = True) -> Any:
    """json.loads, stricter: a key given twice in one object is JSONContentError with its
    path; with ``finite``, so are NaN, Infinity and numbers beyond ±1e30 anywhere.

    Syntax errors stay json.JSONDecodeError, and nesting too deep for the parser stays
    RecursionError, for the caller to word.
    """
    data = json.loads(text, object_pairs_hook=_pairs, parse_int=_bounded_int)
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:  # iterative: the parser's own limit is the only depth limit
        where, value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Pairs) and value.duplicate:
                raise JSONContentError(where, f"duplicate key {printable(repr(value.duplicate))}")
            stack.extend((key_path(where, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif finite and not is_sane_number(value):
            raise JSONContentError(where, "not a finite number")
    return data


def is_sane_number(value: Any) -> bool:
    """False for NaN, the infinities and numbers beyond ±1e30; True for anything not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return abs(value) <= MAX_JSON_NUMBER  # exact for ints of any size: no float conversion


def key_path(where: str, key: Any) -> str:
    """where.key, with the key made safe to print."""
    key = printable(str(key))
    return f"{where}.{key}" if where else key


# -- text from files, made safe to print ---------------------------------------------------------
# Terminal controls: C0 (but tab and newline) and C1 controls, DEL, and the bidirectional
# overrides and isolates that reorder what is shown ("Trojan Source"). ESC starts the
# sequences that clear screens, set window titles or write the clipboard (OSC 52).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: Any, *, newlines: bool = False) -> str:
    """text with every character a terminal would act on shown as an escape (ESC as \\x1b).

    Tabs and newlines stay only with ``newlines`` (a table cell or a one-line message
    must not break). Everything that prints text read from a file passes here.
    """
    out = _CONTROLS.sub(_escape, str(text))
    return out if newlines else out.replace("\n", "\\n").replace("\t", "\\t")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__


def _size(n: int) -> str:
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n:,} bytes"
