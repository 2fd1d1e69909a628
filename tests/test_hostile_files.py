"""Hostile input, class 1: files that are not regular files, never end, or nest without end.

Every file the tool reads (scenario, card, hardware file, prompts, checkpoint config,
index and tokenizer, result files, timelines) and every directory it walks (results,
CARBONBENCH_MODEL_DIR, the Hugging Face cache) is tried with a named pipe (blocks
forever when opened), a symlink to /dev/zero (never ends), a sparse file of gigabytes,
and trees deeper than Python's recursion limit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.checkpoints import write_checkpoint
from support.hostile import (
    assert_ok,
    assert_refused,
    base_run,
    deadline,
    deep_dir,
    endless,
    fifo,
    invoke,
    invoke_subprocess,
    remove_deep,
    save_run,
    small_run,
    sparse,
    write_deep,
    write_scenario,
)

NOT_REGULAR = "not a regular file"
TOO_LARGE = "too large"


def hostile(kind: str, path: Path) -> Path:
    if kind == "fifo":
        return fifo(path)
    if kind == "endless":
        return endless(path)
    return sparse(path)


KINDS = ["fifo", "endless", "sparse"]
WHY = {"fifo": NOT_REGULAR, "endless": NOT_REGULAR, "sparse": TOO_LARGE}


# -- the hangs, each in its own process so that a hang is killed, not waited for -------------
def test_a_named_pipe_as_the_scenario_does_not_hang_run(tmp_path):
    pipe = fifo(tmp_path / "scenario.yaml")
    assert_refused(invoke_subprocess(["run", pipe, "--out", tmp_path / "out"]), pipe, NOT_REGULAR)
    assert not (tmp_path / "out").exists()


def test_a_named_pipe_in_a_results_directory_does_not_hang_report(tmp_path):
    save_run(tmp_path / "results" / "good.json", base_run())
    pipe = fifo(tmp_path / "results" / "pipe.json")
    assert_refused(invoke_subprocess(["report", tmp_path / "results", "-o", tmp_path / "r.html"]), pipe, NOT_REGULAR)


# -- every file read, every kind of endless file ----------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_scenario(kind, tmp_path):
    path = hostile(kind, tmp_path / "scenario.yaml")
    assert_refused(invoke(["run", path, "--out", tmp_path / "out"]), path, WHY[kind])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_card_named_by_a_scenario(kind, tmp_path):
    card = hostile(kind, tmp_path / "card.yaml")
    scenario = write_scenario(tmp_path, models=f"['{card}']")
    named = "/dev/zero" if kind == "endless" else card  # the scenario resolves the entry's links
    assert_refused(invoke(["run", scenario, "--out", tmp_path / "out"]), scenario, "models[0]", named, WHY[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_card_in_the_model_dir(kind, tmp_path):
    card = hostile(kind, tmp_path / "cards" / "evil.yaml")
    assert_refused(invoke(["models"], env={"CARBONBENCH_MODEL_DIR": str(tmp_path / "cards")}), card, WHY[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_hardware_file(kind, tmp_path):
    path = hostile(kind, tmp_path / "hw.yaml")
    assert_refused(invoke(["plan", "opt-tiny", "--hardware", "a100-80gb", "--hardware-file", path]), path, WHY[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_hardware_file_from_the_environment(kind, tmp_path):
    path = hostile(kind, tmp_path / "hw.yaml")
    args = ["estimate", "--devices", "8", "--hours", "1", "--hardware", "a100-80gb", "--country", "FRA"]
    assert_refused(invoke(args, env={"CARBONBENCH_HARDWARE_FILE": str(path)}), path, WHY[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_prompts_file(kind, tmp_path):
    path = hostile(kind, tmp_path / "prompts.txt")
    scenario = write_scenario(tmp_path, workloads="{prefill: {prompt_tokens: [8]}, prompts: prompts.txt}")
    assert_refused(invoke(["run", scenario, "--out", tmp_path / "out"]), path, WHY[kind])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("hostile") / "ckpt")


CHECKPOINT_FILES = ["config.json", "model.safetensors.index.json", "tokenizer.json", "vocab.json"]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_file(kind, name, checkpoint, tmp_path):
    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    if name == "model.safetensors.index.json":
        (ckpt / "model.safetensors").unlink()
    if name == "vocab.json":
        (ckpt / "merges.txt").write_text("#version: 0.2\n")
    (ckpt / name).unlink(missing_ok=True)
    path = hostile(kind, ckpt / name)
    scenario = write_scenario(tmp_path, models=f"['{ckpt}']")
    # A link to /dev/zero is first of all a link out of the checkpoint.
    why = "outside the checkpoint directory" if kind == "endless" else WHY[kind]
    assert_refused(invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"]), path, why)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_result_file_given_by_name(kind, tmp_path):
    path = hostile(kind, tmp_path / "run.json")
    save_run(tmp_path / "good.json", base_run())
    assert_refused(invoke(["compare", path, tmp_path / "good.json"]), path, WHY[kind])


@pytest.mark.parametrize("command", ["report", "compare", "export"])
def test_skip_damaged_passes_over_a_pipe_in_the_results(command, tmp_path):
    good = save_run(tmp_path / "results" / "good.json", small_run())
    fifo(tmp_path / "results" / "pipe.json")
    args = {
        "report": ["report", tmp_path / "results", "-o", tmp_path / "r.html"],
        "compare": ["compare", tmp_path / "results", good],
        "export": ["export", tmp_path / "results", "-o", tmp_path / "x.csv"],
    }[command]
    out = assert_ok(invoke(args + ["--skip-damaged"]))
    assert "pipe.json" in out and NOT_REGULAR in out  # the warning names what was skipped


def test_rerunning_a_result_file_that_is_a_pipe(tmp_path):
    pipe = fifo(tmp_path / "run.json")
    assert_refused(invoke(["run", pipe, "--out", tmp_path / "out"]), pipe, NOT_REGULAR)


@pytest.mark.parametrize("kind", ["fifo", "endless", "sparse"])
def test_timeline_beside_a_result_file(kind, tmp_path):
    """The timeline is optional: the report still reads the run, and says why there is no timeline."""
    from carbonbench.report.data import load

    run = small_run()
    run["timeline_file"] = "run.timeline.csv"
    save_run(tmp_path / "run.json", run)
    hostile(kind, tmp_path / "run.timeline.csv")
    with deadline():
        data = load([tmp_path / "run.json"])
    assert data.runs[0].timeline is None and WHY[kind] in data.runs[0].timeline_note


def test_a_report_is_written_beside_a_timeline_that_is_a_pipe(tmp_path):
    run = small_run()
    run["timeline_file"] = "run.timeline.csv"
    save_run(tmp_path / "run.json", run)
    fifo(tmp_path / "run.timeline.csv")
    assert_ok(invoke(["report", tmp_path / "run.json", "-o", tmp_path / "r.html"]))
    assert NOT_REGULAR in (tmp_path / "r.html").read_text()


def test_results_nested_deeper_than_the_recursion_limit(tmp_path):
    deep_dir(tmp_path / "results", 1100)
    try:
        write_deep(tmp_path / "results", 1100, "run.json", json.dumps(base_run()))
        out = assert_ok(invoke(["export", tmp_path / "results"]))
        assert out.count("\n") > 12  # the header and the fixture's rows: the file at the bottom was found
    finally:
        remove_deep(tmp_path / "results", 1100)


def test_a_directory_symlink_loop_in_the_results_is_not_followed(tmp_path):
    save_run(tmp_path / "results" / "good.json", base_run())
    (tmp_path / "results" / "loop").symlink_to(tmp_path / "results")
    assert_ok(invoke(["export", tmp_path / "results", "-o", tmp_path / "x.csv"]))


@pytest.mark.parametrize("kind", ["fifo", "endless", "file"])
def test_model_dir_that_is_not_a_directory(kind, tmp_path):
    path = tmp_path / "cards"
    if kind == "file":
        path.write_text("name: x\n")
    else:
        hostile(kind, path)
    assert_ok(invoke(["models"], env={"CARBONBENCH_MODEL_DIR": str(path)}))


# -- the Hugging Face cache (HF_HUB_CACHE / HF_HOME) ---------------------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, checkpoint: Path, repo: str = "evil/opt") -> Path:
    storage = root / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    snapshot.parent.mkdir(parents=True)
    shutil.copytree(checkpoint, snapshot)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    return storage


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
@pytest.mark.parametrize("what", ["refs/main", "trees"])
@pytest.mark.parametrize("kind", ["fifo", "endless"])
def test_hub_cache_files(what, kind, variable, checkpoint, tmp_path):
    storage = hub_cache(tmp_path / "home" / "hub", checkpoint)
    path = storage / "refs" / "main" if what == "refs/main" else storage / "trees" / f"{COMMIT}.json"
    if what == "refs/main":
        path.unlink()
    hostile(kind, path)
    env = (
        {"HF_HUB_CACHE": str(tmp_path / "home" / "hub"), "HF_HOME": None}
        if variable == "HF_HUB_CACHE"
        else {"HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": None, "HUGGINGFACE_HUB_CACHE": None}
    )
    assert_refused(invoke(["plan", "evil/opt", "--hardware", "a100-80gb"], env=env), path, NOT_REGULAR)


def test_hub_ref_that_climbs_out_of_the_cache(checkpoint, tmp_path):
    storage = hub_cache(tmp_path / "hub", checkpoint)
    shutil.copytree(checkpoint, tmp_path / "elsewhere")
    (storage / "refs" / "main").write_text("../../../elsewhere")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": None}
    assert_refused(invoke(["plan", "evil/opt", "--hardware", "a100-80gb"], env=env), "not a commit hash")


@pytest.mark.parametrize("kind", ["fifo", "endless", "file"])
def test_hub_cache_that_is_not_a_directory(kind, tmp_path):
    path = tmp_path / "hub"
    if kind == "file":
        path.write_text("x")
    else:
        hostile(kind, path)
    result = invoke(["plan", "evil/opt", "--hardware", "a100-80gb"], env={"HF_HUB_CACHE": str(path), "HF_HOME": None})
    assert_refused(result, "evil/opt", "not in the Hugging Face cache")


def test_hub_cache_with_pipes_for_every_other_repo(checkpoint, tmp_path):
    """The 'did you mean' hint lists the cache without reading any file in it."""
    for name in ("a--b", "c--d"):
        fifo(tmp_path / "hub" / f"models--{name}" / "refs" / "main")
    result = invoke(
        ["plan", "evil/opt", "--hardware", "a100-80gb"], env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": None}
    )
    assert_refused(result, "evil/opt", "not in the Hugging Face cache")


def test_hub_cache_snapshot_linking_into_its_own_blobs_is_fine(checkpoint, tmp_path):
    """huggingface_hub's layout: snapshot files are symlinks into the repo's blobs/."""
    storage = hub_cache(tmp_path / "hub", checkpoint)
    snapshot = storage / "snapshots" / COMMIT
    (storage / "blobs").mkdir()
    for f in list(snapshot.iterdir()):
        blob = storage / "blobs" / f.name
        shutil.move(f, blob)
        f.symlink_to(Path("..") / ".." / "blobs" / f.name)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": None}
    assert_ok(invoke(["plan", "evil/opt", "--hardware", "a100-80gb"], env=env))
    from carbonbench.opt.checkpoint import check_checkpoint

    check_checkpoint(snapshot)
