"""carbonbench: joules, grams of CO2e and dollars per token for the OPT family."""

__version__ = "0.1.0"

# The public measurement API (carbonbench.api), imported on first use: `import carbonbench`
# must not pay for torch, which measuring needs and a light command does not.
_API = ("measure", "measure_session", "Measure", "MeasureSession", "WindowResult", "ComponentResult")


def __getattr__(name: str):
    if name in _API:
        import importlib

        # By name, not `from carbonbench import api`: every module reads __version__ from
        # this package, and a static import here would make each of them depend on the API
        # layer (the layers contract in pyproject.toml would rightly refuse it).
        return getattr(importlib.import_module("carbonbench.api"), name)
    raise AttributeError(f"module 'carbonbench' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
