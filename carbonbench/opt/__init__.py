"""OPT models: cards (carbonbench.opt.card, no torch), the model (carbonbench.opt.model),
building and loading (carbonbench.opt.loading).

The names below are imported on first use (PEP 562), so that reading a card, which
``models``, ``plan`` and ``estimate`` do, never imports torch: ``import carbonbench.opt.card``
runs this file first.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Architecture": "card",
    "Card": "card",
    "find_card": "card",
    "card_for": "hub",
    "KVCache": "model",
    "OPT": "model",
    "decode_step": "model",
    "generate": "model",
    "init_weights": "model",
    "loss_fn": "model",
    "prefill": "model",
    "available_bytes": "loading",
    "build": "loading",
    "load": "loading",
    "load_card": "loading",
    "target_device": "loading",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # looked up once; a test's monkeypatch of it then sticks
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
