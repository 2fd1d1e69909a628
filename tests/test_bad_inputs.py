"""The bad-input corpus, every entry through the CLI.

Each malformed input (scenario file, model card, checkpoint directory, result file,
command-line flag) must give exit status 2, exactly one output line "Error: ..." that
names the problem and the file, no traceback, and nothing written in --out.

Scenario and card files carry their expected message on a first line ``# expect: ...``.
Result files (JSON has no comments) are mapped to theirs in RESULTS below. Checkpoint
directories are built here, from one small valid checkpoint damaged in one way each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support import DATA
from support.checkpoints import CONFIG, good_state_dict, write_checkpoint
from support.cli import invoke_cli
from support.scenarios import scenario_text

SCENARIOS = sorted((DATA / "bad_scenarios").glob("*.yaml"))
CARDS = sorted((DATA / "bad_cards").glob("*.yaml"))
# Cards that are valid as cards (`carbonbench models` lists them) and fail only when run.
RUN_ONLY_CARDS = {"checkpoint_missing"}

RESULTS = {
    "binary.json": "cannot read result file",
    "deeply_nested.json": "JSON nested too deeply",
    "empty.json": "not valid JSON (truncated or corrupted?)",
    "html_page.json": "not valid JSON",
    "no_schema.json": "not a carbonbench result file",
    "not_json.json": "not valid JSON",
    "points_not_list.json": "key 'points' is missing or has the wrong type",
    "run_id_missing.json": "key 'run_id' is missing or has the wrong type",
    "scenario_bad_value.json": "(recorded scenario): batch_sizes[0]: must be > 0 (got 0)",
    "scenario_missing_checkpoint.json": "models[0]: no such card file or checkpoint directory",
    "scenario_not_mapping.json": "key 'scenario' is missing or has the wrong type",
    "scenario_unknown_key.json": "(recorded scenario): modles: unknown key (did you mean 'models'?)",
    "scenario_unknown_model.json": "unknown model card 'opt-9000b'",
    "schema_version_3.json": "schema_version 3 is not supported",
    "schema_version_string.json": "schema_version '1' is not supported",
    "top_level_list.json": "not a carbonbench result file",
    "trailing_garbage.json": "not valid JSON (truncated or corrupted?) at line 2: Extra data",
    "truncated.json": "not valid JSON (truncated or corrupted?)",
    "wrong_schema.json": "not a carbonbench result file",
    "no_grid.json": "scenario.carbon: no grid given",
    "unknown_country.json": "scenario.carbon: unknown country 'XXX'",
    "pue_string.json": "'scenario.carbon.pue' is damaged (expected a number)",
    "tokens_string.json": "'points[0].repeats[0].tokens' is damaged (expected a number)",
    "repeat_null.json": "'points[0].repeats[0]' is damaged (expected a mapping)",
}
# Sound result files whose recorded scenario is not: only re-running them fails.
RERUN_ONLY = {name for name in RESULTS if name.startswith("scenario_") and name != "scenario_not_mapping.json"}


def expected_message(path: Path) -> str:
    first = (path.read_text().splitlines() or [""])[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first.removeprefix("# expect: ")


def invoke(args: list[str], env: dict | None = None):
    return invoke_cli(*args, env=env)


def assert_one_line_error(result, expected: str, *names) -> str:
    """Exit 2, one 'Error:' line naming the problem and each of names, no traceback."""
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("Error: "), line
    assert " ".join(expected.split()) in line, (expected, line)  # the CLI folds whitespace
    for name in names:
        assert str(name) in line, (name, line)
    return line


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def scenario_for(model: str | Path, directory: Path) -> Path:
    path = directory / "scenario.yaml"
    path.write_text(scenario_text(models=f"['{model}']"))
    return path


def test_corpus_is_large_enough():
    beyond_scenarios = len(CARDS) + len(RESULTS) + len(CHECKPOINTS) + len(PROMPTS) + len(FLAGS)
    assert beyond_scenarios >= 30
    assert len(SCENARIOS) >= 30
    assert {p.name for p in (DATA / "bad_results").glob("*.json")} == set(RESULTS)


# -- scenario files -------------------------------------------------------------------
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_bad_scenario(path, tmp_path):
    out = tmp_path / "out"
    result = invoke(["run", path, "--out", out])
    assert_one_line_error(result, expected_message(path), path)
    assert_nothing_written(out)


# -- model cards ----------------------------------------------------------------------
@pytest.mark.parametrize("card", CARDS, ids=[p.stem for p in CARDS])
def test_bad_card_named_by_a_scenario(card, tmp_path):
    out = tmp_path / "out"
    result = invoke(["run", scenario_for(card.resolve(), tmp_path), "--out", out, "--device", "cpu"])
    assert_one_line_error(result, expected_message(card), card.resolve())
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "card",
    [c for c in CARDS if c.stem not in RUN_ONLY_CARDS],
    ids=[c.stem for c in CARDS if c.stem not in RUN_ONLY_CARDS],
)
def test_bad_card_in_the_model_dir(card, tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    shutil.copy(card, cards / card.name)
    result = invoke(["models"], env={"CARBONBENCH_MODEL_DIR": str(cards)})
    assert_one_line_error(result, expected_message(card), cards / card.name)


def test_python_tags_are_never_constructed(tmp_path):
    marker = Path("/tmp/carbonbench-pwned")  # what python_tag.yaml would touch if it were obeyed
    marker.unlink(missing_ok=True)
    invoke(["run", scenario_for((DATA / "bad_cards" / "python_tag.yaml").resolve(), tmp_path), "--out", tmp_path / "o"])
    assert not marker.exists()


# -- checkpoint directories -----------------------------------------------------------
class _Evil:
    """Unpickling this calls Path.touch(marker): it must be refused, never executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _edit_config(**changes):
    def edit(d: Path):
        config = {**CONFIG, **changes}
        config = {k: v for k, v in config.items() if v is not _DROP}
        (d / "config.json").write_text(json.dumps(config))

    return edit


_DROP = object()


def _edit_state(fn):
    def edit(d: Path):
        state = good_state_dict()
        fn(state)
        save_file(state, d / "model.safetensors")

    return edit


def _drop_weights(d: Path):
    (d / "model.safetensors").unlink()


def _evil_pickle(d: Path):
    _drop_weights(d)
    torch.save({"model.decoder.embed_tokens.weight": torch.zeros(2), "x": _Evil(d / "PWNED")}, d / "pytorch_model.bin")


def _bin_list(d: Path):
    _drop_weights(d)
    torch.save([torch.zeros(2)], d / "pytorch_model.bin")


def _truncate(d: Path):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage(d: Path):
    (d / "model.safetensors").write_bytes(b"\x00\x01garbage" * 100)


def _missing_shard(d: Path):
    _drop_weights(d)
    names = list(good_state_dict())
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: "model-00001-of-00002.safetensors" for n in names}})
    )


def _index_without_map(d: Path):
    _drop_weights(d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))


def _corrupt_tokenizer(d: Path):
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": ')


def _remove(name):
    return lambda d: (d / name).unlink()


def _write(name, text):
    return lambda d: (d / name).write_text(text)


def _reshape(state):
    state["model.decoder.layers.0.fc1.weight"] = torch.zeros(31, 16)


def _extra(state):
    state["model.decoder.extra.weight"] = torch.zeros(3)


def _missing(state):
    del state["model.decoder.layers.0.fc1.weight"]


# name -> (damage, expected message, file that must be named (relative to the dir), or "" for the dir)
CHECKPOINTS = {
    "no_config": (_remove("config.json"), "not a checkpoint directory (no config.json)", ""),
    "config_invalid_json": (_write("config.json", '{"hidden_size": 16,'), "invalid JSON at line 1", "config.json"),
    "config_not_object": (_write("config.json", "[1, 2]"), "expected a JSON object", "config.json"),
    "config_prelu": (
        _edit_config(activation_function="prelu"),
        "activation_function = 'prelu' has learned parameters",
        "config.json",
    ),
    "config_not_opt": (_edit_config(model_type="gpt2"), "model_type is 'gpt2', not 'opt'", "config.json"),
    "config_heads": (
        _edit_config(num_attention_heads=3),
        "num_attention_heads = 3 must divide d_model (16)",
        "config.json",
    ),
    "config_layers_missing": (_edit_config(num_hidden_layers=_DROP), "num_hidden_layers is missing", "config.json"),
    "config_layers_string": (
        _edit_config(num_hidden_layers="two"),
        "num_hidden_layers = 'two' is not a positive integer",
        "config.json",
    ),
    "config_bias_string": (
        _edit_config(enable_bias="false"),
        "enable_bias = 'false' must be true or false",
        "config.json",
    ),
    "config_no_bias_but_biases": (_edit_config(enable_bias=False), "unexpected: layers.0.fc1.bias", ""),
    "missing_tensor": (_edit_state(_missing), "missing tensors: layers.0.fc1.weight", ""),
    "misshapen_tensor": (_edit_state(_reshape), "misshapen: layers.0.fc1.weight (31, 16) expected (32, 16)", ""),
    "unexpected_tensor": (_edit_state(_extra), "unexpected: extra.weight", ""),
    "truncated_safetensors": (_truncate, "unreadable weights file", "model.safetensors"),
    "garbage_safetensors": (_garbage, "unreadable weights file", "model.safetensors"),
    "no_weights": (_drop_weights, "no weights found", ""),
    "arbitrary_pickle": (_evil_pickle, "torch.load with weights_only=True refused it", "pytorch_model.bin"),
    "bin_not_a_dict": (_bin_list, "not a flat dictionary of tensors", "pytorch_model.bin"),
    "missing_shard": (_missing_shard, "file not found", "model-00001-of-00002.safetensors"),
    "index_without_weight_map": (_index_without_map, "no weight_map", "model.safetensors.index.json"),
    "corrupt_tokenizer": (_corrupt_tokenizer, "unreadable tokenizer", "tokenizer.json"),
}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("good") / "ckpt")


def test_the_undamaged_checkpoint_passes(good_checkpoint, tmp_path):
    from carbonbench import scenario as sc
    from carbonbench.runner import Runner

    scenario = sc.load(scenario_for(good_checkpoint, tmp_path))
    Runner(scenario, tmp_path / "out", device="cpu")  # checks the checkpoint, writes nothing
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["bin", "legacy_bin", "sharded"])
def test_other_valid_layouts_pass_the_check(layout, good_checkpoint, tmp_path):
    """The pre-run check reads headers (or maps .bin files) and accepts every layout loading does."""
    from carbonbench.opt.checkpoint import check_checkpoint

    ckpt = shutil.copytree(good_checkpoint, tmp_path / "ckpt")
    _drop_weights(ckpt)
    state = good_state_dict()
    if layout == "bin":
        torch.save(state, ckpt / "pytorch_model.bin")
    elif layout == "legacy_bin":
        torch.save(state, ckpt / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    else:
        names = sorted(state)
        shards = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2 :]}
        for shard, keys in shards.items():
            save_file({k: state[k] for k in keys}, ckpt / shard)
        index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    check_checkpoint(ckpt)


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_bad_checkpoint_directory(case, good_checkpoint, tmp_path):
    damage, expected, named = CHECKPOINTS[case]
    ckpt = shutil.copytree(good_checkpoint, tmp_path / "ckpt")
    damage(ckpt)
    out = tmp_path / "out"
    result = invoke(["run", scenario_for(ckpt, tmp_path), "--out", out, "--device", "cpu"])
    assert_one_line_error(result, expected, ckpt / named if named else ckpt)
    assert_nothing_written(out)
    assert not (ckpt / "PWNED").exists()  # the pickle was refused, not executed


def test_card_whose_checkpoint_does_not_match_it(good_checkpoint, tmp_path):
    card = tmp_path / "mine.yaml"
    card.write_text(
        "name: mine\narchitecture: {n_layers: 2, n_heads: 2, d_model: 16, ffn_dim: 32, vocab_size: 100, max_positions: 64}\n"
        f"checkpoint: {good_checkpoint}\n"
    )
    out = tmp_path / "out"
    result = invoke(["run", scenario_for(card, tmp_path), "--out", out, "--device", "cpu"])
    assert_one_line_error(result, "does not match card", card, "n_layers 2 vs 1")
    assert_nothing_written(out)


# -- prompt files (named by a scenario's workloads.prompts) ---------------------------
PROMPTS = {
    "prompts.csv": ("text,id\nhello,1\n", "prompts must be a .txt or .jsonl file"),
    "bad_line.jsonl": ('{"text": "fine"}\n{"text": "broken\n', "line 2: invalid JSON"),
    "no_text.jsonl": ('{"question": "what?"}\n', 'line 1: no "text" or "prompt" string'),
    "array.jsonl": ("[1, 2]\n", "line 1: expected a JSON object"),
    "blank.txt": ("\n\n   \n", "no prompts"),
    "latin1.txt": (b"caf\xe9 au lait\n", "cannot read file"),
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_bad_prompts_file(name, tmp_path):
    content, expected = PROMPTS[name]
    prompts = tmp_path / name
    prompts.write_bytes(content if isinstance(content, bytes) else content.encode())
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(scenario_text(workloads=f"{{prefill: {{prompt_tokens: [8]}}, prompts: {name}}}"))
    out = tmp_path / "out"
    result = invoke(["run", scenario, "--out", out, "--device", "cpu"])
    assert_one_line_error(result, expected, prompts)
    assert_nothing_written(out)


# -- result files ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RESULTS))
def test_bad_result_file_rerun(name, tmp_path):
    path = DATA / "bad_results" / name
    out = tmp_path / "out"
    result = invoke(["run", path, "--out", out, "--device", "cpu"])
    assert_one_line_error(result, RESULTS[name], path)
    assert_nothing_written(out)


@pytest.fixture(scope="module")
def good_result(tmp_path_factory) -> Path:
    run = json.loads((DATA / "bad_results" / "schema_version_3.json").read_text())
    run["schema_version"] = 1
    path = tmp_path_factory.mktemp("good") / "good.json"
    path.write_text(json.dumps(run))
    return path


READ_ERRORS = sorted(set(RESULTS) - RERUN_ONLY)


@pytest.mark.parametrize("name", READ_ERRORS)
def test_bad_result_file_report(name, tmp_path):
    path = DATA / "bad_results" / name
    out = tmp_path / "out"
    result = invoke(["report", path, "-o", out / "report.html"])
    assert_one_line_error(result, RESULTS[name], path)
    assert_nothing_written(out)


@pytest.mark.parametrize("name", READ_ERRORS)
def test_bad_result_file_compare(name, good_result):
    path = DATA / "bad_results" / name
    assert_one_line_error(invoke(["compare", path, good_result]), RESULTS[name], path)


def test_bad_result_file_compare_as_second_side(good_result):
    path = DATA / "bad_results" / "truncated.json"
    assert_one_line_error(invoke(["compare", good_result, path]), RESULTS["truncated.json"], path)


def test_the_good_result_file_is_good(good_result, tmp_path):
    """The files above differ from a sound one only in what makes them bad."""
    assert invoke(["compare", good_result, good_result]).exit_code == 0
    assert invoke(["report", good_result, "-o", tmp_path / "r.html"]).exit_code == 0


# -- command-line flags ---------------------------------------------------------------
def _file(tmp: Path) -> Path:
    f = tmp / "a-file"
    f.write_text("keep me")
    return f


def _scenario(tmp: Path) -> Path:
    return scenario_for("opt-tiny", tmp)


# name -> (args builder (tmp_path -> args), expected message, names (builder -> strings))
FLAGS = {
    "bad_device": (
        lambda t: ["run", _scenario(t), "--out", t / "out", "--device", "tpu"],
        "Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'",
        lambda t: ["--device"],
    ),
    "empty_device": (
        lambda t: ["run", _scenario(t), "--out", t / "out", "--device", ""],
        "Invalid value for '--device'",
        lambda t: [],
    ),
    "out_is_a_file": (lambda t: ["run", _scenario(t), "--out", _file(t)], "is a file", lambda t: [t / "a-file"]),
    "out_below_a_file": (
        lambda t: ["run", _scenario(t), "--out", _file(t) / "sub"],
        "is not a directory",
        lambda t: [t / "a-file"],
    ),
    "unknown_option": (
        lambda t: ["run", _scenario(t), "--out", t / "out", "--bogus"],
        "No such option '--bogus'",
        lambda t: [],
    ),
    "option_takes_no_value": (
        lambda t: ["run", _scenario(t), "--out", t / "out", "--quick=yes"],
        "Option '--quick' does not take a value",
        lambda t: [],
    ),
    "missing_source": (lambda t: ["run", "--out", t / "out"], "Missing argument 'SOURCE'", lambda t: []),
    "extra_argument": (
        lambda t: ["run", _scenario(t), "again.yaml", "--out", t / "out"],
        "Got unexpected extra argument (again.yaml)",
        lambda t: [],
    ),
    "source_is_a_directory": (lambda t: ["run", t, "--out", t / "out"], "is a directory", lambda t: [t]),
    "source_missing": (
        lambda t: ["run", t / "nope.yaml", "--out", t / "out"],
        "file not found",
        lambda t: [t / "nope.yaml"],
    ),
    "source_wrong_kind": (
        lambda t: ["run", _write_text(t / "notes.txt", "hi"), "--out", t / "out"],
        "expected a scenario (.yaml), a result file (.json) or the name of a shipped scenario",
        lambda t: [t / "notes.txt"],
    ),
    "models_unknown_option": (lambda t: ["models", "--bogus"], "No such option '--bogus'", lambda t: []),
    "models_extra_argument": (
        lambda t: ["models", "opt-tiny"],
        "Got unexpected extra argument (opt-tiny)",
        lambda t: [],
    ),
}
if not torch.cuda.is_available():
    FLAGS["cuda_without_gpu"] = (
        lambda t: ["run", _scenario(t), "--out", t / "out", "--device", "cuda"],
        "device 'cuda' was asked for, but torch sees no CUDA GPU",
        lambda t: [],
    )


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(FLAGS))
def test_bad_flag(case, tmp_path):
    build_args, expected, names = FLAGS[case]
    args = build_args(tmp_path)
    result = invoke(args)
    assert_one_line_error(result, expected, *names(tmp_path))
    assert_nothing_written(tmp_path / "out")
    if (tmp_path / "a-file").exists():
        assert (tmp_path / "a-file").read_text() == "keep me"
