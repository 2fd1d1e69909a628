"""Helpers the test files share (tests/ is on sys.path, as pytest's rootdir of test modules).

Fixtures live in tests/conftest.py; what is here is plain code, imported by name:
``from support import DATA``, ``from support.fake_nvml import FakeGpu``. No test file
imports another.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"
