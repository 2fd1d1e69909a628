"""Property-based tests: the scenario loader never gives a traceback, and results round-trip.

Example counts are kept modest so the whole file runs in a few seconds.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbonbench import results, run_record, runfile
from carbonbench import scenario as sc
from carbonbench.errors import ConfigError

SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="carbonbench-prop-") as d:
        yield Path(d)


def load_text(directory: Path, text: str | bytes) -> None:
    """Load text as a scenario file: a Scenario or a ConfigError, never anything else."""
    path = directory / "s.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    try:
        sc.load(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message
        assert "\n" not in message, message


# -- the scenario loader --------------------------------------------------------------
YAML_TOKENS = st.sampled_from(
    [
        "name:",
        "models:",
        "workloads:",
        "prefill:",
        "decode:",
        "train:",
        "prompt_tokens:",
        "new_tokens:",
        "seq_len:",
        "batch_sizes:",
        "measurement:",
        "min_seconds:",
        "repeats:",
        "carbon:",
        "cost:",
        "pue:",
        "device:",
        "dtype:",
        "opt-tiny",
        "opt-125m",
        "model/opt-tiny.yaml",
        "../",
        "/",
        ".",
        "~",
        "null",
        "true",
        "1e9",
        "-1",
        "0",
        "0.5",
        ".nan",
        ".inf",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "- ",
        "-",
        "? ",
        "&a ",
        "*a",
        "<<: ",
        "!!python/object/apply:os.system ",
        "!!binary ",
        "!!float ",
        "!!str ",
        "'",
        '"',
        "|",
        ">",
        "#",
        "%YAML 1.1",
        "---",
        "...",
        "\n",
        "\n  ",
        "\n    ",
        "\t",
        " ",
        "\\x00",
        "\x00",
        "\u2028",
        "\ufeff",
        "é",
    ]
)

yaml_like = st.lists(YAML_TOKENS, max_size=40).map("".join)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["opt-tiny", "opt-125m", "cpu", "cuda", "float16", "relu", "..", "/", "model/opt-tiny.yaml"]),
)
nested = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), children, max_size=4),
    ),
    max_leaves=20,
)
KEYS = [
    "name",
    "models",
    "workloads",
    "batch_sizes",
    "description",
    "device",
    "dtype",
    "engine",
    "seed",
    "measurement",
    "carbon",
    "cost",
]
WORKLOAD_KEYS = ["prefill", "decode", "train", "prompts"]
SIZES = ["prompt_tokens", "new_tokens", "seq_len", "batch_sizes", "lr", "activation_checkpointing"]
# Scenario-shaped data, so that generated files get past the top level into the sections.
near_scenario = st.fixed_dictionaries(
    {"name": st.one_of(st.just("t"), scalars), "models": st.one_of(st.just(["opt-tiny"]), nested)},
    optional={
        "workloads": st.dictionaries(
            st.sampled_from(WORKLOAD_KEYS),
            st.one_of(nested, st.dictionaries(st.sampled_from(SIZES), nested, max_size=3)),
            max_size=3,
        ),
        **{k: nested for k in KEYS[3:]},
    },
)


@SETTINGS
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_gives_a_traceback(workdir, text):
    load_text(workdir, text)


@SETTINGS
@given(text=yaml_like)
def test_yaml_like_text_never_gives_a_traceback(workdir, text):
    load_text(workdir, text)


@settings(deadline=None, max_examples=100)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_give_a_traceback(workdir, data):
    load_text(workdir, data)


@SETTINGS
@given(data=st.one_of(nested, near_scenario))
def test_arbitrary_data_never_gives_a_traceback(workdir, data):
    load_text(workdir, yaml.safe_dump(data, allow_unicode=True))


# -- the results round trip -----------------------------------------------------------
maybe_float = st.one_of(st.none(), st.floats(min_value=0, max_value=1e12), st.just(math.nan), st.just(math.inf))
repeat = st.fixed_dictionaries(
    {
        "steps": st.integers(0, 10**6),
        "tokens": st.one_of(st.none(), st.integers(0, 10**9)),
        "duration_s": st.one_of(st.floats(min_value=1e-6, max_value=1e5), st.none(), st.just(math.nan)),
        "energy_j": maybe_float,
        "active_energy_j": maybe_float,
    }
)
point = st.fixed_dictionaries(
    {
        "workload": st.sampled_from(["prefill", "decode", "train"]),
        "batch_size": st.integers(1, 64),
        "size": st.integers(1, 2048),
        "status": st.sampled_from(["ok", "oom", "nan", "error", "meter-error"]),
        "error": st.one_of(st.none(), st.text(max_size=40)),
        "repeats": st.lists(repeat, max_size=3),
    }
)
carbon = st.one_of(
    st.builds(lambda g: {"grid_g_per_kwh": g}, st.floats(0, 2000)),
    st.just({"country": "FRA"}),
    st.just({"country": "USA", "region": "california"}),
)


def make_run(points: list[dict], carbon_section: dict) -> dict:
    run_points = []
    for i, p in enumerate(points):
        sizes = {"prompt_tokens": 0, "new_tokens": 0, "seq_len": 0}
        if p["workload"] == "train":
            sizes["seq_len"] = p["size"]
        else:
            sizes["prompt_tokens"] = p["size"]
            sizes["new_tokens"] = p["size"] if p["workload"] == "decode" else 0
        reps = [{"repeat": j, **r, "energy_method": "estimated", "components": {}} for j, r in enumerate(p["repeats"])]
        run_points.append(
            {
                "key": f"m{i}/{p['workload']}",
                "model": f"m{i}",
                "workload": p["workload"],
                "batch_size": p["batch_size"],
                **sizes,
                "status": p["status"],
                "error": p["error"],
                "repeats": reps,
            }
        )
    return {
        "schema": run_record.SCHEMA,
        "schema_version": run_record.SCHEMA_VERSION,
        "run_id": "prop",
        "status": "complete",
        "scenario": {"name": "prop", "carbon": carbon_section},
        "points": run_points,
    }


def same(a, b) -> bool:
    """Equal, with NaN/inf/None (not measured) all the same missing value."""

    def missing(x):
        return x is None or (isinstance(x, float) and not math.isfinite(x))

    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return a == pytest.approx(b, rel=1e-12, abs=0)


def rows_by_key(df) -> dict:
    return {(r["model"], r["repeat"]): r for r in df.to_dict("records")}


@settings(deadline=None, max_examples=30)
@given(points=st.lists(point, max_size=4), carbon_section=carbon)
def test_results_round_trip(workdir, points, carbon_section):
    run = make_run(points, carbon_section)
    path = workdir / "run.json"
    runfile.write_run(path, run)
    for derive in (False, True):
        df = results.load(path, derive=derive)
        assert len(df) == sum(max(len(p["repeats"]), 1) for p in run["points"])
        rows = rows_by_key(df)
        for p in run["points"]:
            if not p["repeats"]:
                row = rows[(p["model"], 0)]
                assert row["status"] == p["status"] and same(_plain(row["tokens"]), None)
                continue
            for rep in p["repeats"]:
                row = rows[(p["model"], rep["repeat"])]
                for col in ("tokens", "energy_j", "duration_s", "active_energy_j"):
                    assert same(_plain(row[col]), rep[col]), (derive, col, row[col], rep[col])
                assert row["status"] == p["status"]
                assert _plain(row["error"]) == p["error"]


def _plain(value):
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


# -- damaged result files -------------------------------------------------------------
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
GOOD_RUN = make_run(
    [
        {
            "workload": "decode",
            "batch_size": 2,
            "size": 8,
            "status": "ok",
            "error": None,
            "repeats": [{"steps": 3, "tokens": 48, "duration_s": 0.5, "energy_j": 12.5, "active_energy_j": 3.0}],
        }
    ],
    {"country": "FRA", "pue": 1.2},
)
GOOD_RUN.update(
    device={"type": "cpu", "name": "cpu", "count": 1, "dtype": "float32"},
    idle={"duration_s": 1.0, "power_w": {"cpu": 10.0}},
    environment={"hostname": "h"},
)
GOOD_RUN["scenario"]["cost"] = {"usd_per_kwh": 0.2, "usd_per_device_hour": 1.0}
GOOD_RUN["points"][0]["repeats"][0].update(
    components={"cpu": {"kind": "cpu", "energy_j": 12.5, "method": "estimated"}},
    latency_s={"p50": 0.1, "p90": 0.2, "p99": 0.3},
    flags=["x"],
    ttft_s=0.01,
    tpot_s=0.02,
)
GOOD_RUN["points"][0]["codecarbon"] = {"energy_j": 11.0}


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(GOOD_RUN) if p]


@settings(deadline=None, max_examples=100)
@given(data=st.data())
def test_damaged_result_files_never_give_a_traceback(workdir, data):
    import copy
    import json

    from carbonbench.errors import ResultsError

    run = copy.deepcopy(GOOD_RUN)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(PATHS))
        parent = run
        try:
            for key in where[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(where[-1], None)
            else:
                parent[where[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    path = workdir / "damaged.json"
    path.write_text(json.dumps(run))
    for derive in (False, True):
        try:
            results.load(path, derive=derive)
        except ResultsError as exc:
            assert str(path) in str(exc)
