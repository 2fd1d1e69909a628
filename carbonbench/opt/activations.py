"""FFN activations, by the names OPTConfig's ``activation_function`` takes.

Each is the formula of the transformers.activations.ACT2FN entry of the same name, so a
checkpoint trained with any of them gives the logits transformers gives. The tanh
approximations of GELU (gelu_new, gelu_fast, gelu_accurate, gelu_python_tanh) are one
formula written several ways; they differ by float rounding only, so one kernel serves.
The two ACT2FN entries with learned parameters (prelu, xielu) are refused by the
checkpoint reader: their weights would live outside the decoder layers we load.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from carbonbench.opt.card import LEARNED_ACTIVATIONS


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def _laplace(x: Tensor, mu: float = 0.707107, sigma: float = 0.282095) -> Tensor:
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def _relu2(x: Tensor) -> Tensor:
    return torch.square(F.relu(x))


FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_10": lambda x: torch.clamp(F.gelu(x), -10.0, 10.0),
    "gelu_accurate": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "hardswish": F.hardswish,
    "laplace": _laplace,
    "leaky_relu": F.leaky_relu,  # slope 0.01, nn.LeakyReLU's default
    "linear": lambda x: x,
    "mish": F.mish,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu2": _relu2,
    "relu6": F.relu6,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "swish": F.silu,
    "sqrtsoftplus": lambda x: F.softplus(x).sqrt(),
    "tanh": torch.tanh,
}
LEARNED = LEARNED_ACTIVATIONS  # in ACT2FN with learned parameters (carbonbench.opt.card)


def activation(name: str) -> Callable[[Tensor], Tensor]:
    return FUNCTIONS[name]
