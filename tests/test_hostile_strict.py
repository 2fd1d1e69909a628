"""Hostile input, classes 2 and 3: loading that must be strict, and finite values that overflow later.

The YAML corpus is in tests/data/hostile/{scenarios,cards,hardware}, each file with its
expected message on a first line ``# expect: ...``: duplicate keys at every level, and
durations, sizes, prices and hardware figures far past any real value. JSON files
(results, config.json, the shard index, prompts) are made here. Command-line numbers
for estimate and plan are tried at both ends of their range.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from support.checkpoints import CONFIG, write_checkpoint
from support.hostile import (
    FIXTURE,
    HOSTILE,
    assert_ok,
    assert_refused,
    base_run,
    invoke,
    save_run,
    write_scenario,
)

SCENARIOS = sorted((HOSTILE / "scenarios").glob("*.yaml"))
CARDS = sorted((HOSTILE / "cards").glob("*.yaml"))
HARDWARE = sorted((HOSTILE / "hardware").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path, tmp_path):
    assert_refused(invoke(["run", path, "--out", tmp_path / "out"]), path, expected(path))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("card", CARDS, ids=[p.stem for p in CARDS])
def test_card_named_by_a_scenario(card, tmp_path):
    start = time.perf_counter()
    scenario = write_scenario(tmp_path, models=f"['{card}']")
    assert_refused(invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"]), card, expected(card))
    assert time.perf_counter() - start < 10  # refused from the numbers, before any model is built


@pytest.mark.parametrize("card", CARDS, ids=[p.stem for p in CARDS])
def test_card_in_the_model_dir(card, tmp_path):
    shutil.copy(card, tmp_path / card.name)
    result = invoke(["models"], env={"CARBONBENCH_MODEL_DIR": str(tmp_path)})
    assert_refused(result, tmp_path / card.name, expected(card))


@pytest.mark.parametrize("card", CARDS, ids=[p.stem for p in CARDS])
def test_card_planned(card):
    assert_refused(invoke(["plan", card, "--hardware", "a100-80gb"]), card, expected(card))


@pytest.mark.parametrize("path", HARDWARE, ids=[p.stem for p in HARDWARE])
def test_hardware_file_planned(path):
    assert_refused(invoke(["plan", "opt-tiny", "--hardware", "evil", "--hardware-file", path]), path, expected(path))


@pytest.mark.parametrize("path", HARDWARE, ids=[p.stem for p in HARDWARE])
def test_hardware_file_estimated(path):
    args = [
        "estimate",
        "--model",
        "opt-tiny",
        "--tokens",
        "1e9",
        "--hardware",
        "evil",
        "--devices",
        "8",
        "--mfu",
        "0.4",
        "--country",
        "FRA",
    ]
    assert_refused(invoke(args, env={"CARBONBENCH_HARDWARE_FILE": str(path)}), path, expected(path))


def test_yaml_merge_keys_are_not_duplicates():
    from carbonbench import scenario as sc

    s = sc.load(HOSTILE / "ok" / "merge_keys.yaml")
    assert s.workloads.prefill.prompt_tokens == [8] and s.workloads.prefill.batch_sizes == [2]
    assert s.workloads.decode.prompt_tokens == [16] and s.workloads.decode.batch_sizes == [2]


# -- duplicate keys in JSON -----------------------------------------------------------------
def _dup_text(run: dict, key: str, value, where: str) -> str:
    """run as JSON with ``key`` given twice in the object at ``where`` (its first value kept)."""
    text = json.dumps(run)
    i = text.index(where)
    return text[:i] + f"{json.dumps(key)}: {json.dumps(value)}, " + text[i:]


@pytest.mark.parametrize(
    "key, where, path",
    [
        ("run_id", '"schema": ', "run_id"),
        ("energy_j", '"energy_j": ', "points[0].repeats[0]"),
        ("pue", '"pue": ', "scenario.carbon"),
    ],
)
def test_duplicate_key_in_a_result_file(key, where, path, tmp_path):
    f = save_run(tmp_path / "run.json", None, raw=_dup_text(base_run(), key, "x" if key == "run_id" else 1.0, where))
    for args in (["report", f, "-o", tmp_path / "r.html"], ["compare", f, FIXTURE], ["export", f]):
        assert_refused(invoke(args), f, f"duplicate key '{key}'", path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("strict") / "ckpt")


def test_duplicate_key_in_config_json(checkpoint, tmp_path):
    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    text = json.dumps(CONFIG)
    (ckpt / "config.json").write_text(text[:-1] + ', "num_hidden_layers": 96}')
    assert_refused(
        invoke(["plan", ckpt, "--hardware", "a100-80gb"]), ckpt / "config.json", "duplicate key 'num_hidden_layers'"
    )


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("num_hidden_layers", 10**8, "must be <= 4096"),
        ("hidden_size", 2**40, "must be <= 1048576"),
        ("vocab_size", 10**12, "must be <= 16777216"),
        ("max_position_embeddings", 10**400, "is not a positive integer"),
        ("ffn_dim", 1e300, "is not a positive integer"),
    ],
    ids=["layers", "hidden", "vocab", "positions_400_digits", "ffn_float"],
)
def test_config_json_sizes_past_any_model(key, value, why, checkpoint, tmp_path):
    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    text = json.dumps({**CONFIG, key: "@"}).replace('"@"', str(value) if isinstance(value, int) else "1e300")
    (ckpt / "config.json").write_text(text)
    start = time.perf_counter()
    assert_refused(invoke(["plan", ckpt, "--hardware", "a100-80gb"]), ckpt / "config.json", key, why)
    scenario = write_scenario(tmp_path, models=f"['{ckpt}']")
    assert_refused(invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"]), key, why)
    assert time.perf_counter() - start < 10


def test_the_cli_ceilings_are_the_cards():
    from carbonbench.cli import estimate
    from carbonbench.opt import card

    assert (estimate.MAX_LAYERS, estimate.MAX_WIDTH, estimate.MAX_POSITIONS) == (
        card.MAX_LAYERS,
        card.MAX_WIDTH,
        card.MAX_POSITIONS,
    )


def test_duplicate_tensor_in_the_shard_index(checkpoint, tmp_path):
    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    (ckpt / "model.safetensors").rename(ckpt / "a.safetensors")
    names = ["model.decoder.embed_tokens.weight"]
    text = '{"weight_map": {"%s": "a.safetensors", "%s": "b.safetensors"}}' % (names[0], names[0])
    (ckpt / "model.safetensors.index.json").write_text(text)
    scenario = write_scenario(tmp_path, models=f"['{ckpt}']")
    assert_refused(
        invoke(["run", scenario, "--out", tmp_path / "out", "--device", "cpu"]),
        ckpt / "model.safetensors.index.json",
        f"duplicate key '{names[0]}'",
    )


def test_duplicate_key_in_a_jsonl_prompt(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"text": "hello", "text": "world"}\n')
    scenario = write_scenario(tmp_path, workloads="{prefill: {prompt_tokens: [8]}, prompts: p.jsonl}")
    assert_refused(
        invoke(["run", scenario, "--out", tmp_path / "out"]), tmp_path / "p.jsonl", "line 1", "duplicate key 'text'"
    )


# -- numbers on the command line ------------------------------------------------------------
TRAIN = [
    "estimate",
    "--model",
    "opt-tiny",
    "--tokens",
    "1e9",
    "--hardware",
    "a100-80gb",
    "--devices",
    "8",
    "--country",
    "FRA",
]
POWER = ["estimate", "--devices", "8", "--hours", "24", "--device-power-w", "700", "--country", "FRA"]
INFER = [
    "estimate",
    "--from",
    FIXTURE,
    "--select",
    "model=opt-125m",
    "--select",
    "workload=decode",
    "--requests-per-day",
    "1e6",
    "--tokens-per-request",
    "500",
]


def _with(args: list, flag: str, value: str) -> list:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


ESTIMATE_FLAGS = {
    "params": (
        [
            "estimate",
            "--params",
            "1e300",
            "--layers",
            "2",
            "--d-model",
            "64",
            "--seq-len",
            "16",
            "--tokens",
            "1e9",
            "--hardware",
            "a100-80gb",
            "--devices",
            "8",
            "--mfu",
            "0.4",
        ],
        "--params",
    ),
    "tokens": (_with(TRAIN + ["--mfu", "0.4"], "--tokens", "1e300"), "--tokens"),
    "devices": (_with(TRAIN + ["--mfu", "0.4"], "--devices", "1" + "0" * 400), "--devices"),
    "mfu_tiny": (TRAIN + ["--mfu", "1e-300"], "--mfu"),
    "achieved_huge": (TRAIN + ["--achieved-tflops", "1e300"], "--achieved-tflops"),
    "achieved_tiny": (TRAIN + ["--achieved-tflops", "1e-300"], "--achieved-tflops"),
    "seq_len": (TRAIN + ["--mfu", "0.4", "--seq-len", "1" + "0" * 30], "--seq-len"),
    "layers": (
        [
            "estimate",
            "--params",
            "1e9",
            "--layers",
            "1" + "0" * 30,
            "--d-model",
            "64",
            "--seq-len",
            "16",
            "--tokens",
            "1e9",
            "--hardware",
            "a100-80gb",
            "--devices",
            "8",
            "--mfu",
            "0.4",
        ],
        "--layers",
    ),
    "hours": (_with(POWER, "--hours", "1e300"), "--hours"),
    "device_hours": (
        ["estimate", "--device-hours", "1e308", "--device-power-w", "700", "--country", "FRA"],
        "--device-hours",
    ),
    "power": (_with(POWER, "--device-power-w", "1e300"), "--device-power-w"),
    "host_power": (POWER + ["--host-w-per-device", "1e300"], "--host-w-per-device"),
    "grid": (POWER[:-2] + ["--grid-g-per-kwh", "1e300"], "--grid-g-per-kwh"),
    "pue": (POWER + ["--pue", "1e300"], "--pue"),
    "price": (POWER + ["--usd-per-kwh", "1e300"], "--usd-per-kwh"),
    "rental": (POWER + ["--usd-per-device-hour", "1e300"], "--usd-per-device-hour"),
    "embodied": (
        POWER + ["--hardware", "a100-80gb", "--embodied-kgco2e", "1e300", "--embodied-source", "x"],
        "--embodied-kgco2e",
    ),
    "lifetime": (POWER + ["--hardware", "a100-80gb", "--embodied", "--lifetime-years", "1e-300"], "--lifetime-years"),
    "utilisation": (POWER + ["--hardware", "a100-80gb", "--embodied", "--utilisation", "1e-300"], "--utilisation"),
    "requests": (_with(INFER, "--requests-per-day", "1e300"), "--requests-per-day"),
    "tokens_per_request": (_with(INFER, "--tokens-per-request", "1e300"), "--tokens-per-request"),
}


@pytest.mark.parametrize("case", list(ESTIMATE_FLAGS))
def test_estimate_number_out_of_range(case):
    args, flag = ESTIMATE_FLAGS[case]
    assert_refused(invoke(args), flag)


def test_estimate_at_the_edge_of_every_range_stays_finite():
    """The largest inputs each flag takes, together: big figures, never inf or NaN."""
    args = [
        "estimate",
        "--params",
        "1e15",
        "--layers",
        "4096",
        "--d-model",
        "1048576",
        "--seq-len",
        "16777216",
        "--tokens",
        "1e18",
        "--hardware",
        "a100-80gb",
        "--devices",
        "1",
        "--achieved-tflops",
        "0.000001",
        "--grid-g-per-kwh",
        "100000",
        "--pue",
        "100",
        "--usd-per-kwh",
        "10000",
        "--usd-per-device-hour",
        "1e6",
        "--host-w-per-device",
        "1e6",
        "--device-power-w",
        "1e6",
        "--format",
        "json",
    ]
    estimate = json.loads(assert_ok(invoke(args)))
    for key in ("model_flops", "hardware_flops", "wall_days", "device_hours", "energy_mwh", "co2e_t", "cost_usd"):
        assert isinstance(estimate[key], float) and estimate[key] > 0, (key, estimate[key])


@pytest.mark.parametrize("flag, value", [("--batch-size", "1" + "0" * 400), ("--seq-len", "1" + "0" * 30)])
def test_plan_number_out_of_range(flag, value):
    assert_refused(invoke(["plan", "opt-tiny", "--hardware", "a100-80gb", flag, value]), flag)


def test_plan_with_no_usable_memory(tmp_path):
    hw = tmp_path / "hw.yaml"
    hw.write_text("hardware:\n  - {name: small, memory_gb: 0.001, peak_bf16_tflops: 1, memory_bandwidth_gb_per_s: 1}\n")
    result = invoke(["plan", "opt-tiny", "--hardware", "small", "--hardware-file", hw, "--reserve", "0.9999999999"])
    assert_refused(result, "usable")


def test_plan_at_the_largest_sizes_stays_finite(tmp_path):
    assert_ok(
        invoke(["plan", "opt-tiny", "--hardware", "a100-80gb", "--batch-size", "16777216", "--seq-len", "16777216"])
    )
