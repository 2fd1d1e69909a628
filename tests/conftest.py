import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

# Card names resolve from the repository's model/ whatever the working directory.
os.environ.setdefault("CARBONBENCH_MODEL_DIR", str(ROOT / "model"))


@pytest.fixture
def tiny_scenario(tmp_path):
    """A scenario over opt-tiny whose points take well under a second each."""

    def make(extra: str = "", codecarbon: bool = False) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(
            "name: tiny\n"
            "models: [opt-tiny]\n"
            "batch_sizes: [2]\n"
            "workloads:\n"
            "  prefill: {prompt_tokens: [16]}\n"
            "  decode: {prompt_tokens: [8], new_tokens: [4]}\n"
            "  train: {seq_len: [16]}\n"
            "measurement:\n"
            "  warmup_steps: 1\n"
            "  warmup_s: 0\n"
            "  min_seconds: 0.05\n"
            "  repeats: 2\n"
            "  idle_baseline_s: 0.1\n"
            f"  codecarbon: {'true' if codecarbon else 'false'}\n" + extra
        )
        return path

    return make
