"""Hugging Face model ids, resolved from a local cache only, with the network blocked.

The cache is built the way huggingface_hub lays it out (blobs named by hash, a snapshot
of symlinks per commit, refs/main naming the commit), in a temporary directory that
HF_HUB_CACHE or HF_HOME points at.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.scenarios import scenario_text

import carbonbench.opt as opt
from carbonbench import scenario as sc
from carbonbench.errors import ConfigError
from carbonbench.opt.hub import cache_dir, card_for, is_hub_id

transformers = pytest.importorskip("transformers")

REPO = "testorg/opt-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.OPTConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.OPTForCausalLM(config).eval()


def write_cache(cache: Path, model, repo: str = REPO) -> Path:
    """A huggingface_hub cache holding repo at COMMIT; returns the snapshot directory."""
    saved = cache.parent / f"saved-{repo.replace('/', '-')}"
    model.save_pretrained(saved)
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in saved.iterdir():
        data = f.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch, hf_model):
    root = tmp_path / "hf-cache"
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    write_cache(root, hf_model)
    return root


def same_weights(model, hf_model) -> bool:
    expected = {k.removeprefix("model.decoder."): v for k, v in hf_model.state_dict().items()}
    return all(torch.equal(t, expected[name]) for name, t in model.state_dict().items())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("facebook/opt-1.3b", True),
        ("testorg/opt-tiny", True),
        ("org_1/model.v2", True),
        ("opt-125m", False),
        ("./facebook/opt-1.3b", False),
        ("/abs/path", False),
        ("a/b/c", False),
        ("facebook/opt-1.3b.yaml", False),
        ("facebook/opt--x", False),
        ("facebook/x..y", False),
        ("facebook/", False),
        ("~/models", False),
        ("facebook/opt 1.3b", False),
        ("facebook/.hidden", False),
    ],
)
def test_what_counts_as_a_hub_id(text, expected):
    assert is_hub_id(text) is expected


def test_load_from_the_cache_with_the_network_blocked(cache, hf_model, no_network):
    model = opt.load(REPO)
    assert same_weights(model, hf_model)
    assert no_network == []
    card = card_for(REPO)
    assert card.name == REPO and Path(card.checkpoint) == cache / "models--testorg--opt-tiny" / "snapshots" / COMMIT


def test_hf_home_is_respected(tmp_path, monkeypatch, hf_model):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    write_cache(tmp_path / "home" / "hub", hf_model)
    assert cache_dir() == tmp_path / "home" / "hub"
    assert same_weights(opt.load(REPO), hf_model)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HF_HOME": "/x/home"},
        {"HF_HUB_CACHE": "/y/hub"},
        {"HF_HOME": "/x/home", "HF_HUB_CACHE": "/y/hub"},
        {"HUGGINGFACE_HUB_CACHE": "/z/legacy"},
        {"XDG_CACHE_HOME": "/w/xdg"},
        {"HF_HOME": "~/hf"},
    ],
)
def test_cache_dir_agrees_with_huggingface_hub(env, monkeypatch):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")
    }
    theirs = subprocess.run(
        [sys.executable, "-c", "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cache_dir() == Path(theirs)


def test_a_scenario_runs_a_cached_model_offline(cache, tmp_path, no_network):
    from carbonbench.runner import Runner

    path = tmp_path / "s.yaml"
    path.write_text(scenario_text(name="hub", models=f"[{REPO}, opt-tiny]", min_seconds=0.02))
    scenario = sc.load(path)
    assert scenario.models == [REPO, "opt-tiny"]  # the id is kept, so the run file names the weights' source
    outcome = Runner(scenario, tmp_path / "out", device="cpu").run()
    assert [p.model for p in outcome.run.points] == [REPO, "opt-tiny"]
    assert all(p.ok for p in outcome.run.points)
    assert no_network == []


def test_an_existing_path_wins_over_an_id(cache, tmp_path, hf_model):
    local = tmp_path / REPO
    hf_model.save_pretrained(local)
    path = tmp_path / "s.yaml"
    path.write_text(f"name: local\nmodels: [{REPO}]\nworkloads: {{prefill: {{prompt_tokens: [8]}}}}\n")
    assert sc.load(path).models == [str(local.resolve())]


def test_a_missing_model_is_one_line_naming_id_cache_and_remedy(invoke_cli, cache, tmp_path, no_network):
    path = tmp_path / "s.yaml"
    path.write_text("name: missing\nmodels: [facebook/opt-1.3b]\nworkloads: {prefill: {prompt_tokens: [8]}}\n")
    result = invoke_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    line = lines[0]
    assert line.startswith(f"Error: {path}: models[0]: facebook/opt-1.3b: ")
    assert f"not in the Hugging Face cache {cache}" in line
    assert "hf download facebook/opt-1.3b" in line and "huggingface-cli download facebook/opt-1.3b" in line
    assert "models--facebook--opt-1.3b" in line and "HF_HUB_CACHE" in line
    assert not (tmp_path / "out").exists()
    assert no_network == []


def test_a_near_miss_suggests_the_cached_id(cache):
    with pytest.raises(ConfigError, match=r"\(did you mean 'testorg/opt-tiny'\?\)"):
        opt.load("testorg/opt-tinny")


def test_a_missing_cache_directory_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"nowhere \(which does not exist\)"):
        card_for("facebook/opt-125m")


def test_a_snapshot_without_config_is_refused(cache):
    (cache / "models--testorg--opt-tiny" / "snapshots" / COMMIT / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"testorg/opt-tiny: the cached snapshot .* has no config.json"):
        opt.load(REPO)


def test_plan_takes_a_hub_id_and_a_checkpoint_dir(invoke_cli, cache, hf_model, tmp_path):
    params = sum(p.numel() for p in hf_model.parameters())
    for model in (REPO, str(cache / "models--testorg--opt-tiny" / "snapshots" / COMMIT)):
        result = invoke_cli("plan", model, "--hardware", "a100-80gb", "--format", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["params"] == params
    missing = invoke_cli("plan", "facebook/opt-66b", "--hardware", "a100-80gb")
    assert missing.exit_code == 2 and "facebook/opt-66b: no such checkpoint directory" in missing.output
