"""Hostile input, classes 4 and 5: sizes checked before anything is built or allocated, and
checkpoints that reach outside their directory.

A model (card or config.json) too large for the machine is refused from its numbers,
before a module is made on the meta device; a point whose activations or KV cache cannot
fit in host memory is an ``oom`` row before it runs. A shard index, a weights file or a
tokenizer that resolves outside the checkpoint directory is refused before it is opened.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
import warnings
from pathlib import Path

import pytest
from support.checkpoints import CONFIG, good_state_dict, write_checkpoint
from support.hostile import assert_ok, assert_refused, endless, fifo, invoke, write_scenario

OUTSIDE = "outside the checkpoint directory"
BIG_ARCH = {"n_layers": 4096, "n_heads": 64, "d_model": 65536, "ffn_dim": 262144}


@pytest.fixture
def no_big_builds(monkeypatch):
    """Fail any attempt to make a large OPT module, even on the meta device."""
    from carbonbench.opt import model

    real = model.OPT.__init__

    def guarded(self, arch, *args, **kwargs):
        assert arch.n_layers <= 64, f"SIZE: built a {arch.n_layers}-layer model before checking its size"
        real(self, arch, *args, **kwargs)

    monkeypatch.setattr(model.OPT, "__init__", guarded)


def test_a_card_too_large_for_the_host_is_an_oom_row_before_it_is_built(no_big_builds, tmp_path):
    card = tmp_path / "huge.yaml"
    card.write_text(f"name: huge\narchitecture: {json.dumps(BIG_ARCH)}\n")
    scenario = write_scenario(tmp_path, models=f"['{card}']")
    start = time.perf_counter()
    result = invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"])
    assert_ok(result, code=1)  # a failed point, recorded; the sweep itself completed
    run = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert run["status"] == "complete"
    assert [p["status"] for p in run["points"]] == ["oom"]
    assert "GB" in run["points"][0]["error"]
    assert time.perf_counter() - start < 20


def test_a_config_json_too_large_is_checked_without_building_it(no_big_builds, tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    config = {
        **CONFIG,
        "num_hidden_layers": 4096,
        "hidden_size": 65536,
        "num_attention_heads": 64,
        "ffn_dim": 262144,
        "word_embed_proj_dim": 65536,
    }
    (ckpt / "config.json").write_text(json.dumps(config))
    scenario = write_scenario(tmp_path, models=f"['{ckpt}']")
    assert_refused(invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"]), ckpt, "misshapen")
    assert_ok(invoke(["plan", ckpt, "--hardware", "a100-80gb"]))


def test_opt_load_refuses_a_too_large_model_from_its_numbers(no_big_builds):
    import carbonbench.opt as opt
    from carbonbench.errors import ModelTooLargeError
    from carbonbench.opt.card import Architecture

    with pytest.raises(ModelTooLargeError, match="GB of weights"):
        opt.build(Architecture(**BIG_ARCH), device="cpu")


def test_points_that_cannot_fit_in_host_memory_are_oom_rows(tmp_path):
    huge = 1 << 20
    scenario = write_scenario(
        tmp_path,
        workloads=(
            f"{{prefill: {{prompt_tokens: [8], batch_sizes: [1, {huge}]}}, "
            f"decode: {{prompt_tokens: [8], new_tokens: [2], batch_sizes: [{huge}]}}, "
            f"train: {{seq_len: [16], batch_sizes: [{huge}]}}}}"
        ),
    )
    start = time.perf_counter()
    result = invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"])
    assert_ok(result, code=1)
    run = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert run["status"] == "complete"
    status = {p["key"]: (p["status"], p["error"]) for p in run["points"]}
    assert status.pop("opt-tiny/prefill/b1/p8")[0] == "ok"
    for key, (state, error) in status.items():
        assert state == "oom", (key, state, error)
        assert "host memory" in error and "GB" in error, error
    assert time.perf_counter() - start < 30


# -- checkpoints that reach outside themselves ---------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("escape") / "ckpt")


@pytest.fixture
def ckpt(source, tmp_path) -> Path:
    return shutil.copytree(source, tmp_path / "ckpt")


def sharded(ckpt: Path, shard: object) -> Path:
    """ckpt's weights listed by an index naming ``shard`` for every tensor."""
    (ckpt / "model.safetensors").unlink()
    index = ckpt / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {name: shard for name in good_state_dict()}}))
    return index


def elsewhere(ckpt: Path) -> Path:
    """Sound weights outside the checkpoint: if they were read, the run would succeed."""
    from safetensors.torch import save_file

    target = ckpt.parent / "elsewhere" / "x.safetensors"
    target.parent.mkdir(exist_ok=True)
    save_file(good_state_dict(), target)
    return target


def run_it(ckpt: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path, models=f"['{ckpt}']")
    return invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"])


def test_shard_path_climbing_out(ckpt, tmp_path):
    elsewhere(ckpt)
    index = sharded(ckpt, "../elsewhere/x.safetensors")
    assert_refused(run_it(ckpt, tmp_path), index, "../elsewhere/x.safetensors", OUTSIDE)


def test_absolute_shard_path(ckpt, tmp_path):
    target = elsewhere(ckpt)
    index = sharded(ckpt, str(target))
    assert_refused(run_it(ckpt, tmp_path), index, OUTSIDE)


def test_shard_symlink_pointing_out(ckpt, tmp_path):
    (ckpt / "x.safetensors").symlink_to(elsewhere(ckpt))
    index = sharded(ckpt, "x.safetensors")
    assert_refused(run_it(ckpt, tmp_path), index, OUTSIDE)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_checkpoint_file_symlink_pointing_out(name, ckpt, tmp_path):
    if name == "tokenizer.json":
        (tmp_path / "tok.json").write_text("{}")
        target = tmp_path / "tok.json"
    elif name == "config.json":
        target = tmp_path / "config.json"
        target.write_text(json.dumps(CONFIG))
    else:
        target = elsewhere(ckpt)
    (ckpt / name).unlink(missing_ok=True)
    (ckpt / name).symlink_to(target)
    assert_refused(run_it(ckpt, tmp_path), ckpt / name, OUTSIDE)
    if name == "config.json":
        assert_refused(invoke(["plan", ckpt, "--hardware", "a100-80gb"]), ckpt / name, OUTSIDE)


@pytest.mark.parametrize(
    "shard, why",
    [
        (7, "must be a file name"),
        ({"a": 1}, "must be a file name"),
        ("", "must be a file name"),
        (".", "is a directory"),
        ("sub", "is a directory"),
    ],
)
def test_shard_that_is_not_a_file_name(shard, why, ckpt, tmp_path):
    (ckpt / "sub").mkdir()
    index = sharded(ckpt, shard)
    assert_refused(run_it(ckpt, tmp_path), index, why)


NEVER_ENDS = [(fifo, "not a regular file (a named pipe)"), (endless, OUTSIDE)]  # /dev/zero is outside too


@pytest.mark.parametrize("make, why", NEVER_ENDS, ids=["fifo", "endless"])
def test_shard_that_never_ends(make, why, ckpt, tmp_path):
    make(ckpt / "x.safetensors")
    index = sharded(ckpt, "x.safetensors")
    assert_refused(run_it(ckpt, tmp_path), index, ckpt / "x.safetensors", why)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("make, why", NEVER_ENDS, ids=["fifo", "endless"])
def test_weights_file_that_never_ends(make, why, name, ckpt, tmp_path):
    (ckpt / "model.safetensors").unlink()
    make(ckpt / name)
    assert_refused(run_it(ckpt, tmp_path), ckpt / name, why)


def test_a_checkpoint_reached_through_a_symlink_is_fine(ckpt, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(ckpt)
    (ckpt / "model.safetensors").rename(ckpt / "a.safetensors")
    (ckpt / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {name: "a.safetensors" for name in good_state_dict()}})
    )
    from carbonbench.opt.checkpoint import check_checkpoint

    check_checkpoint(link)
    assert_ok(invoke(["plan", link, "--hardware", "a100-80gb"]))


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_pickle_is_one_line_without_torch_warnings(ckpt, tmp_path):
    """torch warns about a pickle's protocol before weights_only refuses it; only the refusal is said."""
    from carbonbench.errors import CheckpointError
    from carbonbench.opt.checkpoint import check_checkpoint, read_state_dict

    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _Evil(tmp_path / "PWNED")}, protocol=4))
    for read in (check_checkpoint, read_state_dict):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CheckpointError, match="weights_only=True refused it"):
                read(ckpt)
        assert [str(w.message) for w in caught] == []
    scenario = write_scenario(tmp_path, models=f"['{ckpt}']")
    assert_refused(
        invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"]),
        ckpt / "pytorch_model.bin",
        "weights_only=True refused it",
    )
    assert not (tmp_path / "PWNED").exists()
