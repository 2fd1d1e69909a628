"""One machine-readable flag everywhere: --format json gives valid, stable JSON on stdout."""

import json

import pytest
from support import DATA

FIXTURE = DATA / "results" / "opt-125m-h100-fixture-20260901T120000000000Z.json"


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which Python writes but JSON does not have."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def other_machine(tmp_path):
    run = json.loads(FIXTURE.read_text())
    run.update(run_id="other-copy", timeline_file=None)
    run["environment"]["hostname"] = "other"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(run))
    return path


COMMANDS = {
    "models": (["models"], {"cards", "card_dirs"}),
    "env": (["env", "--device", "cpu"], {"cpu_model", "meters", "device_type"}),
    "plan": (["plan", "opt-1.3b", "--hardware", "a100-80gb"], {"model", "params", "inference", "training"}),
    "estimate": (
        [
            "estimate",
            "--model",
            "opt-175b",
            "--tokens",
            "300e9",
            "--hardware",
            "a100-80gb",
            "--devices",
            "992",
            "--achieved-tflops",
            "147",
        ],
        {"hardware_flops", "model_flops", "co2e_t", "assumptions"},
    ),
    "compare": (["compare", str(FIXTURE), "OTHER"], {"a", "b", "matched", "summary"}),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_format_json_is_valid_and_stable(invoke_cli, name, other_machine):
    args, keys = COMMANDS[name]
    args = [str(other_machine) if a == "OTHER" else a for a in args]
    first = invoke_cli(*args, "--format", "json")
    assert first.exit_code == 0, first.output
    data = strict_json(first.stdout)
    assert keys <= set(data), sorted(data)
    assert first.stderr == ""  # nothing beside the JSON
    again = strict_json(invoke_cli(*args, "--format", "json").stdout)
    assert list(again) == list(data)  # the same keys, in the same order
    if name != "env":  # env reads live counters; the others are functions of their input
        assert again == data
    text = invoke_cli(*args)
    assert text.exit_code == 0 and not text.stdout.lstrip().startswith("{")  # text stays the default


def test_models_json_has_exact_counts(invoke_cli):
    data = strict_json(invoke_cli("models", "--format", "json").stdout)
    cards = {c["name"]: c for c in data["cards"]}
    assert cards["opt-175b"]["parameters"] == 174_604_468_224
    assert cards["opt-350m"]["architecture"]["layer_norm"] == "post"
    assert [c["parameters"] for c in data["cards"]] == sorted(c["parameters"] for c in data["cards"])


def test_env_json_is_still_accepted_but_deprecated(invoke_cli):
    result = invoke_cli("env", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["device_type"] == "cpu"
    assert "--json is deprecated; use --format json" in result.stderr
    both = invoke_cli("env", "--json", "--format", "text")
    assert both.exit_code == 2 and "--json and --format text contradict each other" in both.output


def test_models_without_any_card_is_an_error(invoke_cli, tmp_path, monkeypatch):
    import carbonbench.opt.card as card

    monkeypatch.setattr(card, "shipped_cards_dir", lambda: None)
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke_cli("models", env={"CARBONBENCH_MODEL_DIR": str(empty)})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: no model cards found, looked in {empty}")
    assert "CARBONBENCH_MODEL_DIR" in lines[0]
