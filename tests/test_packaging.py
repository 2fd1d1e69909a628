"""The cards and shipped scenarios are found under every install layout, from any directory.

A copy of the source tree is built into an sdist and a wheel from that sdist (what an
index would serve), with setuptools' own PEP 517 hooks and no network. The wheel is then
installed, without dependencies, with ``pip --target``, with ``pip --user`` and into a
fresh virtual environment (non-editable), and each is run from an empty directory.
The dependencies (torch and the rest) come from this test environment's site-packages,
added after the install's own so that only the installed carbonbench can be imported.
The editable install is the one these tests run under.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from support import ROOT

import carbonbench
from carbonbench.opt.card import shipped_cards_dir

SITE = Path(sysconfig.get_paths()["purelib"])  # where torch, click, ... are installed for this run
CHECK = """
import json, sys
from pathlib import Path
import carbonbench
from carbonbench.opt.card import card_dirs, known_cards
from carbonbench.cli.run import _load_source
print(json.dumps({"package": carbonbench.__file__, "card_dirs": [str(d) for d in card_dirs()],
                  "cards": sorted(known_cards()), "scenario": _load_source(Path("opt-125m")).name}))
"""


def _clean_env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CARBONBENCH_MODEL_DIR", "PYTHONPATH", "PYTHONUSERBASE", "PYTHONNOUSERSITE")
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    src = root / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "results", "reports", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache"
        ),
    )
    hooks = (
        "import sys; from setuptools import build_meta as b; "
        "print(b.build_sdist(sys.argv[1]) if sys.argv[2] == 'sdist' else b.build_wheel(sys.argv[1]))"
    )
    dist = root / "dist"
    sdist = subprocess.run(
        [sys.executable, "-c", hooks, str(dist), "sdist"], cwd=src, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    shutil.unpack_archive(dist / sdist, root / "unpacked")
    (unpacked,) = (root / "unpacked").iterdir()
    name = subprocess.run(
        [sys.executable, "-c", hooks, str(dist), "wheel"], cwd=unpacked, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    return dist / name


def _run(python: str, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _check_layout(python: str, env: dict, prefix: Path, tmp_path: Path) -> dict:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _run(python, empty, env, "-c", CHECK)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout)
    assert Path(info["package"]).resolve().is_relative_to(prefix.resolve()), info  # not the editable copy
    assert len(info["card_dirs"]) == 1 and Path(info["card_dirs"][0]).resolve().is_relative_to(prefix.resolve())
    assert {"opt-125m", "opt-175b", "opt-tiny"} <= set(info["cards"])
    assert info["scenario"] == "opt-125m"
    models = _run(python, empty, env, "-m", "carbonbench", "models", "--format", "json")
    assert models.returncode == 0, models.stderr[-3000:]
    assert len(json.loads(models.stdout)["cards"]) == len(list((ROOT / "model").glob("*.yaml")))
    assert list(empty.iterdir()) == []  # nothing written where it ran
    return info


def test_the_wheel_holds_every_module_card_scenario_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "carbonbench").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # a subpackage missing from pyproject's list
    assert {f"carbonbench/model/{p.name}" for p in (ROOT / "model").glob("*.yaml")} <= names
    assert {f"carbonbench/scenarios/{p.name}" for p in (ROOT / "scenarios").glob("*.yaml")} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("model/", "scenarios/", "tests/")) for n in names)


def test_pip_install_target(wheel, tmp_path):
    target = tmp_path / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    _check_layout(sys.executable, _clean_env(PYTHONPATH=os.pathsep.join([str(target), str(SITE)])), target, tmp_path)


def test_pip_install_user(wheel, tmp_path):
    base = getattr(sys, "_base_executable", sys.executable)  # a venv's python has no user site
    userbase = tmp_path / "userbase"
    env = _clean_env(PYTHONUSERBASE=str(userbase))
    if subprocess.run([base, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.skip(f"{base} has no pip to install with --user")
    subprocess.run(
        [
            base,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--user",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    # The base interpreter sees the user site; this site-packages only supplies the dependencies.
    _check_layout(base, {**env, "PYTHONPATH": str(SITE)}, userbase, tmp_path)


def test_a_fresh_venv_non_editable(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            str(python), tmp_path, _clean_env(), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    # Dependencies by a .pth line: a path added so is not scanned for .pth files itself, so
    # this environment's editable carbonbench does not come along.
    (site / "deps.pth").write_text(f"{SITE}\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    _check_layout(str(python), _clean_env(), venv, tmp_path)
    script = _run(str(venv / "bin" / "carbonbench"), tmp_path, _clean_env(), "run", "opt-12m")
    assert script.returncode == 2 and "(did you mean 'opt-125m'?)" in script.stderr


def test_the_editable_install_reads_the_repository_folders():
    if not Path(carbonbench.__file__).resolve().is_relative_to(ROOT):
        pytest.skip("these tests run against a non-editable install")
    assert shipped_cards_dir().resolve() == ROOT / "model"
