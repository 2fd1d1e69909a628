"""Typed records from plain JSON data: the kind checks and the record base class.

A record's plain fields each have a kind (a number, a string, ...). Reading checks every
field it knows against its kind and keeps the keys it does not know in ``extra``, so a
file written by a newer version passes through unchanged; writing gives the fields back
with ``extra`` after them. A field of the wrong kind is ``Damaged``, named by its key path.

Beyond the known fields, ``sane_numbers`` refuses NaN, the infinities and numbers past
1e30 anywhere in a file, free-form parts included (environment, meters, codecarbon's
totals): a reader that meets one later derives NaN silently or overflows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, ClassVar, Optional

from carbonbench.errors import ResultsError
from carbonbench.meters.idle import IdleBaseline
from carbonbench.reading import MAX_JSON_NUMBER, is_sane_number, key_path, printable

# Larger than any real count of tokens, FLOPs or bytes: an integer past this is damage
# (a float conversion of a 400-digit integer overflows in every reader).
_MAX_NUMBER = MAX_JSON_NUMBER

NUMBER, STRING, BOOL, LIST, MAPPING = "a number", "a string", "true or false", "a list", "a mapping"


class Damaged(ResultsError):
    """A field of the wrong kind; the reader adds the file's name."""

    def __init__(self, where: str, want: str):
        # The key path is made of the file's own keys: shown safely, whatever they hold.
        super().__init__(f"'{printable(where)}' is damaged (expected {want})")


def check(value: Any, want: str, where: str) -> Any:
    """``value`` if it is of kind ``want`` (None always passes: absent is allowed)."""
    if value is None:
        return None
    if want == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Damaged(where, want)
        if (
            isinstance(value, int)
            and abs(value) > _MAX_NUMBER
            or isinstance(value, float)
            and not (math.isfinite(value) and abs(value) <= _MAX_NUMBER)
        ):
            raise Damaged(where, "a finite number")
        return value
    kinds = {STRING: str, BOOL: bool, LIST: list, MAPPING: dict}
    if not isinstance(value, kinds[want]):
        raise Damaged(where, want)
    return value


def numbers(data: Any, where: str) -> dict[str, Any]:
    """A mapping whose every value is a number (or absent)."""
    data = check(data, MAPPING, where) or {}
    return {str(k): check(v, NUMBER, key_path(where, k)) for k, v in data.items()}


def summary_figures(summary: Any, where: str) -> None:
    """A stored point summary's figures (mean, std, ci95, n of each) are numbers, as readers use them."""
    for figure, stats in (summary or {}).items():
        stats = check(stats, MAPPING, key_path(where, figure)) or {}
        for stat in ("mean", "std", "ci95", "n"):
            check(stats.get(stat), NUMBER, key_path(key_path(where, figure), stat))


def sane_numbers(data: Any) -> None:
    """Damaged, by key path, for the first NaN, infinity or number beyond 1e30 anywhere in data.

    Iterative, so any depth the JSON parser accepted is walked without recursion.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((key_path(where, k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif not is_sane_number(value):
            raise Damaged(where, "a finite number")


class Record:
    """Typed fields from a plain mapping; unknown keys are kept in ``extra``.

    Subclasses list each plain field's kind in ``KINDS``; a field not listed there is
    taken as it is (a free-form mapping, such as the environment), and fields holding
    other records are converted by the subclass's own ``from_dict``.
    """

    KINDS: ClassVar[dict[str, str]] = {}

    @classmethod
    def fields_of(cls, data: Any, where: str) -> dict[str, Any]:
        data = check(data, MAPPING, where)
        if data is None:
            raise Damaged(where, MAPPING)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        out: dict[str, Any] = {"extra": {k: v for k, v in data.items() if k not in names}}
        for name in names & data.keys():
            want = cls.KINDS.get(name)
            out[name] = check(data[name], want, f"{where}.{name}" if where else name) if want else data[name]
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = to_plain(value)
        out.update(self.extra)
        return out


def to_plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, IdleBaseline):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def omit(default: Any = None) -> Any:
    return field(default=default, metadata={"omit_none": True})


def idle_baseline(data: Any) -> Optional[IdleBaseline]:
    """A run's recorded idle baseline, checked."""
    idle = check(data, MAPPING, "idle")
    if idle is None:
        return None
    power = numbers(idle.get("power_w"), "idle.power_w")
    return IdleBaseline(
        duration_s=check(idle.get("duration_s"), NUMBER, "idle.duration_s") or 0.0,
        power_w=power,
        method={str(k): v for k, v in (check(idle.get("method"), MAPPING, "idle.method") or {}).items()},
        start_unix_s=check(idle.get("start_unix_s"), NUMBER, "idle.start_unix_s") or 0.0,
        flags=tuple(idle.get("flags") or ()),
    )
