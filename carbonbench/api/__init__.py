"""Measure your own code: ``measure`` (one window) and ``measure_session`` (a run file).

``carbonbench.measure`` and ``carbonbench.measure_session`` are these, imported on first
use so that ``import carbonbench`` stays cheap (no torch). docs/measurement.md documents
the API; README.md has examples, which tests/test_measure_readme.py runs.
"""

from carbonbench.api.session import MeasureSession, measure_session
from carbonbench.api.window import ComponentResult, Measure, WindowResult, measure

__all__ = ["ComponentResult", "Measure", "MeasureSession", "WindowResult", "measure", "measure_session"]
