from pathlib import Path

import pytest
from support import DATA, ROOT

from carbonbench import scenario as sc
from carbonbench.errors import ConfigError

BAD = sorted((DATA / "bad_scenarios").glob("*.yaml"))


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_enough():
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_scenario_gives_one_clear_message(path):
    with pytest.raises(ConfigError) as info:
        sc.load(path)
    message = str(info.value)
    assert message.startswith(str(path)), message  # names the file
    assert expected_message(path) in message
    assert "\n" not in message


def test_missing_file_and_directory_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        sc.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        sc.load(tmp_path)


def test_binary_file_is_unreadable(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x00garbage")
    with pytest.raises(ConfigError, match="cannot read file"):
        sc.load(path)


@pytest.mark.parametrize("name", ["opt-125m", "opt-1.3b", "opt-sizes", "opt-train"])
def test_shipped_scenarios_load(name):
    scenario = sc.load(ROOT / "scenarios" / f"{name}.yaml")
    assert scenario.name == name
    assert sc.expand(scenario)


def test_defaults_and_scientific_notation(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nmodels: [opt-tiny]\nworkloads: {prefill: {prompt_tokens: [8]}}\ncarbon: {grid_g_per_kwh: 1e2}\n"
    )
    s = sc.load(path)
    assert s.batch_sizes == [1]
    assert s.device == "auto" and s.engine == "native"
    assert s.measurement.repeats == 3 and s.measurement.sample_interval_s == 0.1
    assert s.carbon.grid_g_per_kwh == 100.0  # PyYAML reads "1e2" as a string


def test_lone_value_is_a_one_item_sweep(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodels: opt-tiny\nbatch_sizes: 4\nworkloads: {train: {seq_len: 16}}\n")
    s = sc.load(path)
    assert s.models == ["opt-tiny"] and s.batch_sizes == [4]


def test_expand_covers_every_combination_once(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nmodels: [opt-tiny]\nbatch_sizes: [1, 2, 2]\n"
        "workloads:\n"
        "  prefill: {prompt_tokens: [8, 16]}\n"
        "  decode: {prompt_tokens: [8], new_tokens: [4, 8]}\n"
        "  train: {seq_len: [32], batch_sizes: [3]}\n"
    )
    points = sc.expand(sc.load(path))
    keys = [p.key for p in points]
    assert len(keys) == len(set(keys))
    assert keys == [
        "opt-tiny/prefill/b1/p8",
        "opt-tiny/prefill/b1/p16",
        "opt-tiny/prefill/b2/p8",
        "opt-tiny/prefill/b2/p16",
        "opt-tiny/decode/b1/p8-n4",
        "opt-tiny/decode/b1/p8-n8",
        "opt-tiny/decode/b2/p8-n4",
        "opt-tiny/decode/b2/p8-n8",
        "opt-tiny/train/b3/s32",
    ]
    train = points[-1]
    assert (train.workload, train.batch_size, train.seq_len, train.prompt_tokens) == ("train", 3, 32, 0)


def test_card_file_and_relative_paths(tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "mine.yaml").write_text(
        "architecture: {n_layers: 1, n_heads: 2, d_model: 8, ffn_dim: 16, vocab_size: 100, max_positions: 32}\n"
    )
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodels: [cards/mine.yaml]\nworkloads: {prefill: {prompt_tokens: [40]}}\n")
    with pytest.raises(ConfigError, match="longest is 40, more than mine's 32 positions"):
        sc.load(path)
    path.write_text("name: s\nmodels: [cards/mine.yaml]\nworkloads: {prefill: {prompt_tokens: [16]}}\n")
    s = sc.load(path)
    assert Path(s.models[0]).is_absolute()
    assert sc.expand(s)[0].model == "mine"


def test_round_trip_through_plain_data():
    s = sc.load(ROOT / "scenarios" / "opt-1.3b.yaml")
    again = sc.from_dict(s.to_dict(), source="copy")
    assert again == s
