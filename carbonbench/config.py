"""Strict loading of YAML into dataclasses.

Scenarios and model cards are both read here, so both give the same kind of message:
the file, the key path, the bad value and, for a typo, the closest valid key.

A dataclass field can carry ``metadata={"min": x}`` (inclusive lower bound),
``{"gt": x}`` (exclusive lower bound) or ``{"max": x}``. A number with no ``max`` is still
refused beyond ±1e30 (``MAX_NUMBER``): a finite value that large overflows whatever is
computed from it later, and result files refuse it too. Cross-field checks live in the
class's ``__post_init__``: raise ``FieldError(key, value, why)`` there and this module
adds the file and the path above it.

Files are read through ``carbonbench.files`` (regular files only, size-capped), and a
key given twice in one mapping is refused with both lines, where PyYAML would keep the
last silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from carbonbench.errors import ConfigError
from carbonbench.reading import MAX_JSON_NUMBER, MAX_YAML, UnreadableFile, read_text

MAX_NUMBER = MAX_JSON_NUMBER  # the same ceiling as result files: what is loaded can be recorded


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class FieldError(ValueError):
    """Raised from ``__post_init__``: ``key`` is relative to the dataclass being built."""

    def __init__(self, key: str, value: Any, why: str):
        super().__init__(why)
        self.key, self.value, self.why = key, value, why


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file as ``safe_load`` would, refusing duplicate keys; every failure is ConfigError."""
    path = Path(path)
    try:
        text = read_text(path, MAX_YAML)
    except UnreadableFile as exc:
        raise ConfigError(exc.worded("YAML file") if exc.reason == "directory" else str(exc)) from None
    try:
        loader = _StrictLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(f"{path}: YAML syntax error at {where}: {exc.problem or exc}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {_one_line(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nesting is too deep") from None
    except Exception as exc:  # PyYAML's own bugs on odd input, e.g. IndexError for "!!float ''"
        raise ConfigError(f"{path}: YAML error: cannot read a value ({type(exc).__name__}: {_one_line(exc)})") from None


class _DuplicateKey(Exception):
    pass


_MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key given twice in one mapping.

    The whole node graph is checked before anything is constructed: construction
    flattens merge keys (``<<: *defaults``) into the mappings, after which an explicit
    key overriding a merged one (which YAML allows) would look like a repeat. Each node
    is visited once, so aliases cost nothing however often they are used.
    """

    def construct_document(self, node):
        self._refuse_duplicate_keys(node)
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, root) -> None:
        visited, stack = set(), [root]
        while stack:
            node = stack.pop()
            if id(node) in visited:
                continue
            visited.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
            if not isinstance(node, yaml.MappingNode):
                continue
            first: dict = {}
            for key_node, value_node in node.value:
                stack.append(value_node)
                if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                    stack.append(key_node)
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                try:
                    seen = key in first
                except TypeError:  # an unhashable key: the constructor's own error names it
                    continue
                if seen:
                    raise _DuplicateKey(f"duplicate key {_SHOWN.repr(key)} on line {line} (first on line {first[key]})")
                first[key] = line


def build(cls: type, data: Any, *, source: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, refusing anything not declared."""
    return _convert(cls, data, source, path)


def closest(word: str, options: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest option, or '' when nothing is close."""
    match = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# Bounded repr: YAML aliases can make a small file a huge (shared) tree ("billion laughs"),
# whose full repr would take minutes; only the first 80 characters are shown anyway.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 200, 200
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 10


def _fail(source: str, path: str, value: Any, why: str) -> ConfigError:
    key = path or "(top level)"
    shown = _SHOWN.repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{source}: {key}: {why} (got {shown})")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int) or not key.isprintable() or not key.strip():
        return f"{path}[{key!r}]"  # a key with a newline must not break the one-line message
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(source, path, value, f"expected {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            hint = closest(value, [str(c) for c in choices]) if isinstance(value, str) and len(choices) > 1 else ""
            raise _fail(source, path, value, f"expected {_type_name(tp)}{hint}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]  # a lone value is a one-item sweep
        if not isinstance(value, list):
            raise _fail(source, path, value, f"expected {_type_name(tp)}")
        if not value:
            raise _fail(source, path, value, "must not be empty")
        items = [_convert(item_tp, v, source, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _fail(source, path, value, "expected a mapping")
        return {str(k): _convert(val_tp, v, source, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, source, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(source, path, value, "expected true or false")
        return value
    if tp in (int, float) and isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        value = float(value)  # PyYAML reads 1e9 (no dot, no exponent sign) as a string
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                return int(value)
            raise _fail(source, path, value, "expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, path, value, "expected a number")
        if not math.isfinite(value):
            raise _fail(source, path, value, "expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(source, path, value, "expected a string")
        return value
    raise TypeError(f"config: unsupported field type {tp!r}")  # a bug in our dataclasses


def _build_dataclass(cls: type, value: Any, source: str, path: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail(source, path, value, "expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in value:
        if not isinstance(key, str) or key not in fields:
            raise _fail(
                source,
                _join(path, str(key)),
                key,
                f"unknown key{closest(str(key), fields)}; valid keys: {', '.join(fields)}",
            )
    kwargs = {}
    for name, field in fields.items():
        sub = _join(path, name)
        if name not in value:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise _fail(source, sub, None, "required key is missing")
            continue
        converted = _convert(hints[name], value[name], source, sub)
        _check_bounds(field, converted, source, sub)
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise _fail(source, _join(path, exc.key), exc.value, exc.why) from None


def _check_bounds(field: dataclasses.Field, value: Any, source: str, path: str) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for i, v in enumerate(values):
        why = _out_of_bounds(field.metadata, v)
        if why:
            where = _join(path, i) if isinstance(value, (list, tuple)) else path
            raise _fail(source, where, v, why)


def check_bounds(obj: Any) -> None:
    """FieldError for the first field of dataclass obj outside its bounds: for classes
    also built directly (a checkpoint's config.json), from their ``__post_init__``."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            why = _out_of_bounds(f.metadata, v)
            if why:
                raise FieldError(f.name, v, why)


def _out_of_bounds(meta: Any, v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return ""
    if "min" in meta and v < meta["min"]:
        return f"must be >= {_bound(meta['min'])}"
    if "gt" in meta and v <= meta["gt"]:
        return f"must be > {_bound(meta['gt'])}"
    if "max" in meta and v > meta["max"]:
        return f"must be <= {_bound(meta['max'])}"
    if v > MAX_NUMBER or v < -MAX_NUMBER:  # ints compare exactly, however many digits
        return f"must be <= {_bound(MAX_NUMBER)}" if v > 0 else f"must be >= {_bound(-MAX_NUMBER)}"
    return ""


def _bound(x: float) -> str:
    """A bound as Python writes it: 86400, 1.0, 0.001, 1e-06, 1e+30."""
    return str(x)


def positive(**extra: Any) -> dict:
    """Field metadata for a strictly positive number."""
    return {"gt": 0, **extra}


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain JSON-able data (for result files)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
