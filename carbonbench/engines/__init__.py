"""Engines: the implementations of OPT that a scenario can measure.

``native`` (carbonbench's own model, the default) and ``transformers`` (Hugging Face's
OPTForCausalLM, an optional extra). Both implement ``carbonbench.engines.base.Engine``:
``load``, ``new_cache``, ``prefill``, ``decode_step``, ``train_loss``, ``optimizer``,
and the warm-up hooks ``compiles``/``seal``/``unseal``. The scenario's ``engine``
section picks one and its options (docs/engines.md).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from carbonbench.engines.base import Engine, effective
from carbonbench.engines.hf import TransformersEngine
from carbonbench.engines.native import NativeEngine
from carbonbench.scenario import EngineConfig

ENGINES: dict[str, type[Engine]] = {"native": NativeEngine, "transformers": TransformersEngine}

__all__ = ["ENGINES", "Engine", "EngineConfig", "NativeEngine", "TransformersEngine", "make_engine"]


def make_engine(config: Union[EngineConfig, str, None], device: Union[torch.device, str, None] = "cpu") -> Engine:
    """The engine a scenario's ``engine`` section asks for, with the options that apply
    on device (the rest dropped, each with a note in ``engine.notes``).

    UserError when the engine cannot run here (the transformers extra is missing)."""
    if config is None:
        config = EngineConfig()
    elif isinstance(config, str):
        config = EngineConfig(name=config)
    device = torch.device(device if device is not None else "cpu")
    config, notes = effective(config, device)
    return ENGINES[config.name](config, device, notes)


def default_engine(device: Optional[torch.device] = None) -> Engine:
    return make_engine(None, device or "cpu")
