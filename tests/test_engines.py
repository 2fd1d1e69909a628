"""Engines: native and transformers run every workload, agree token for token, and are recorded."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import torch
from support import ROOT
from support.scenarios import scenario_text

from carbonbench import opt, results
from carbonbench import scenario as sc
from carbonbench.engines import ENGINES, make_engine
from carbonbench.engines.hf import MISSING
from carbonbench.errors import ConfigError, UserError
from carbonbench.opt.card import Architecture
from carbonbench.opt.model import PAD_ID
from carbonbench.opt.tokenizer import synthetic_prompts
from carbonbench.runner import Runner
from carbonbench.scenario import EngineConfig, ModelEntry, Point
from carbonbench.workloads import Decode, Inputs, Train

transformers = pytest.importorskip("transformers")

VOCAB, PROMPT, NEW = 1000, 12, 10


def run(path, out, **kwargs):
    return Runner(sc.load(path), out, **kwargs).run()


def decode_only(path):
    """The tiny scenario with its decode point only."""
    text = path.read_text().replace("  prefill: {prompt_tokens: [16]}\n", "").replace("  train: {seq_len: [16]}\n", "")
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(ENGINES))
def test_each_engine_runs_every_workload_and_is_recorded(tiny_scenario, tmp_path, name):
    outcome = run(tiny_scenario(f"engine: {name}\n"), tmp_path / "out")
    assert [(p.workload, p.status) for p in outcome.run.points] == [
        ("prefill", "ok"),
        ("decode", "ok"),
        ("train", "ok"),
    ]
    assert outcome.run.engine["name"] == name
    df = results.load(tmp_path / "out")
    assert set(df["engine"]) == {name}
    static = "true" if name == "native" else "false"  # transformers: DynamicCache, q/k/v unfused
    assert set(df["engine_options"]) == {
        f"compile=false,cuda_graphs=false,fused_optimizer=true,fused_qkv={static},sdpa_backend=auto,static_cache={static}"
    }
    assert (df["tokens"] > 0).all() and (df["energy_j"] > 0).all()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny transformers OPT with every tensor perturbed, saved as a checkpoint dir."""
    config = transformers.OPTConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        max_position_embeddings=64,
        dropout=0.0,
    )
    torch.manual_seed(0)
    hf = transformers.OPTForCausalLM(config)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("tiny-hf")
    hf.save_pretrained(directory)
    return directory


def prompts():
    ids = synthetic_prompts(3, PROMPT, VOCAB, seed=1)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding of different lengths
    mask[2, :9] = 0
    return ids.masked_fill(mask == 0, PAD_ID), mask


VARIANTS = [
    ("native", {}),
    ("native", {"static_cache": False}),
    ("transformers", {}),
    ("transformers", {"static_cache": True}),
]


def test_engines_give_the_same_greedy_tokens_and_losses_from_one_checkpoint(checkpoint):
    ids, mask = prompts()
    point = Point("m", "decode", 3, prompt_tokens=PROMPT, new_tokens=NEW)
    tokens, losses = {}, {}
    for name, options in VARIANTS:
        engine = make_engine(EngineConfig(name=name, **options), "cpu")
        model = engine.load(ModelEntry.of(str(checkpoint)), "cpu", torch.float32, seed=0).eval()
        for padded in (False, True):
            decode = Decode(model, point, Inputs(ids, mask if padded else None), lambda: None, engine=engine)
            decode.step()
            decode.step()  # a second generation into the same cache must not see the first
            tokens.setdefault(padded, []).append(decode.out.clone())
        train = Train(
            model,
            Point("m", "train", 2, seq_len=16),
            Inputs(synthetic_prompts(2, 16, VOCAB, seed=2)),
            lambda: None,
            lr=1e-2,
            autocast_dtype=None,
            recompute=False,
            engine=engine,
        )
        steps = []
        for _ in range(2):
            train.step()
            steps.append(float(train.last_loss))
        train.close()
        losses[(name, tuple(options))] = steps
    for padded, outs in tokens.items():
        for out in outs[1:]:
            assert torch.equal(out, outs[0]), f"padded={padded}"
    first = next(iter(losses.values()))
    for steps in losses.values():
        assert steps == pytest.approx(first, rel=1e-4)


def test_transformers_engine_matches_the_hf_generate_it_stands_for(checkpoint):
    ids, mask = prompts()
    engine = make_engine("transformers", "cpu")
    model = engine.load(ModelEntry.of(str(checkpoint)), "cpu", torch.float32, seed=0).eval()
    decode = Decode(
        model,
        Point("m", "decode", 3, prompt_tokens=PROMPT, new_tokens=NEW),
        Inputs(ids, mask),
        lambda: None,
        engine=engine,
    )
    decode.step()
    expected = model.hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW)[
        :, PROMPT:
    ]
    assert torch.equal(decode.out, expected)


ARCHS = {
    "pre-LN": Architecture(n_layers=2, n_heads=4, d_model=32, ffn_dim=64, vocab_size=300, max_positions=64),
    "post-LN": Architecture(
        n_layers=2,
        n_heads=4,
        d_model=32,
        ffn_dim=64,
        vocab_size=300,
        max_positions=64,
        word_embed_proj_dim=16,
        layer_norm="post",
    ),
}


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS.keys())
@pytest.mark.parametrize("padded", [False, True])
def test_fixed_shape_step_is_the_decode_step(arch, padded):
    """OPT.step (position as a tensor, all slots masked: compile and CUDA-graph friendly)."""
    model = opt.build(arch, seed=0).eval()
    ids = synthetic_prompts(3, 10, 300, seed=1)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask = mask if padded else None
    ref, new = model.new_cache(3, 18), model.new_cache(3, 18)
    token = opt.prefill(model, ids, ref, mask).argmax(-1, keepdim=True)
    opt.prefill(model, ids, new, mask)
    pos = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        for i in range(8):
            expected = opt.decode_step(model, token, ref, 10 + i)
            pos.fill_(10 + i)
            got = model.step(token, new, pos)
            assert (got - expected).abs().max() < 1e-5
            token = expected.argmax(-1, keepdim=True)


def test_compiled_engine_compiles_in_the_warm_up_and_never_in_a_window(tiny_scenario, tmp_path, monkeypatch):
    # "eager": dynamo traces and guards as with inductor, minus code generation (fast).
    monkeypatch.setenv("CARBONBENCH_COMPILE_BACKEND", "eager")
    outcome = run(decode_only(tiny_scenario("engine: {compile: true}\n")), tmp_path / "out")
    (point,) = outcome.run.points
    assert point.status == "ok", point.error
    warmup = point.warmup
    assert warmup["steps"] >= 3 and warmup["compile_s"] > 0 and warmup["first_step_s"] > warmup["steady_step_s"]
    assert outcome.run.engine["options"]["compile"] is True
    assert outcome.run.engine["compile_backend"] == "eager"

    # Sealed (as in a window), a new shape is an error, not a silent compile; unsealed, fine.
    engine = make_engine(EngineConfig(compile=True), "cpu")
    model = opt.build(ARCHS["pre-LN"], seed=0).eval()
    engine.prefill(model, synthetic_prompts(1, 8, 300), engine.new_cache(model, 1, 8))
    engine.seal()
    try:
        with pytest.raises(RuntimeError, match="recompile"):
            engine.prefill(model, synthetic_prompts(2, 5, 300), engine.new_cache(model, 2, 5))
    finally:
        engine.unseal()
    engine.prefill(model, synthetic_prompts(2, 5, 300), engine.new_cache(model, 2, 5))


def _cxx_works() -> bool:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return False
    return subprocess.run([cxx, "--version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _cxx_works(), reason="inductor needs a working C++ compiler on the CPU")
def test_inductor_compiles_the_decode_step_on_the_cpu(monkeypatch):
    monkeypatch.delenv("CARBONBENCH_COMPILE_BACKEND", raising=False)
    arch = Architecture(n_layers=1, n_heads=2, d_model=16, ffn_dim=32, vocab_size=64, max_positions=32)
    model = opt.build(arch, seed=0).eval()
    step = make_engine(EngineConfig(compile=True), "cpu").step_fn()  # OPT.step through inductor
    ids = synthetic_prompts(2, 6, 64)
    ref, new = model.new_cache(2, 8), model.new_cache(2, 8)
    token = opt.prefill(model, ids, ref).argmax(-1, keepdim=True)
    opt.prefill(model, ids, new)
    with torch.inference_mode():
        for pos in (6, 7):
            expected = opt.decode_step(model, token, ref, pos)
            got = step(model, token, new, torch.tensor([pos]))
            assert (got - expected).abs().max() < 1e-5
            token = expected.argmax(-1, keepdim=True)


BAD = {
    "engine: vllm\n": "engine.name: expected one of 'native', 'transformers'",
    "engine: {name: native, compiel: true}\n": "engine.compiel: unknown key (did you mean 'compile'?)",
    "engine: {name: transformers, cuda_graphs: true}\n": "engine.cuda_graphs: is a native-engine setting",
    "engine: {name: transformers, fused_qkv: true}\n": "engine.fused_qkv: is a native-engine setting",
    "engine: {cuda_graphs: true}\ndevice: cpu\n": "engine.cuda_graphs: needs CUDA, but device is 'cpu'",
    "engine: {compile: true, static_cache: false}\n": "engine.compile: needs static_cache: true",
    "engine: {cuda_graphs: true, static_cache: false}\n": "engine.cuda_graphs: needs static_cache: true",
    "engine: {sdpa_backend: fast}\n": "engine.sdpa_backend: expected one of 'auto', 'flash'",
    "engine: {sdpa_backend: efficient}\ndevice: cpu\n": "engine.sdpa_backend: is a CUDA kernel",
    "engine: {compile: yes please}\n": "engine.compile: expected true or false",
}


@pytest.mark.parametrize("extra", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_engine_settings_are_one_line_config_errors(tiny_scenario, extra):
    path = tiny_scenario(extra)
    with pytest.raises(ConfigError) as info:
        sc.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert BAD[extra] in message


def test_plain_and_section_forms_and_the_round_trip(tiny_scenario):
    plain = sc.load(tiny_scenario("engine: transformers\n"))
    assert plain.engine == "transformers" and plain.engine.name == "transformers"
    assert plain.engine.static_cache is False  # transformers' own default, DynamicCache
    section = sc.load(tiny_scenario("engine: {name: native, compile: true, sdpa_backend: math}\n"))
    assert section.engine == EngineConfig(compile=True, sdpa_backend="math")
    assert section.engine.static_cache is True
    for s in (plain, section):
        assert sc.from_dict(s.to_dict(), source="copy") == s
    assert sc.load(tiny_scenario()).engine == EngineConfig()


def test_results_read_old_runs_whose_engine_is_a_name(tiny_run, copy_run, tmp_path):
    path = copy_run(tiny_run)  # in tmp_path/out
    data = json.loads(path.read_text())
    data.pop("engine")
    data["scenario"]["engine"] = "native"
    path.write_text(json.dumps(data))
    df = results.load(tmp_path / "out")
    assert set(df["engine"]) == {"native"} and df["engine_options"].isna().all()


def test_without_transformers_choosing_it_is_one_line(tiny_scenario, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    with pytest.raises(UserError) as info:
        make_engine("transformers", "cpu")
    assert (
        str(info.value)
        == MISSING
        == ("engine 'transformers' needs the transformers extra: pip install carbonbench[transformers]")
    )
    with pytest.raises(UserError, match="transformers extra"):
        run(decode_only(tiny_scenario("engine: transformers\n")), tmp_path / "out")


def test_cuda_options_on_a_cpu_are_dropped_with_a_note(tiny_scenario, tmp_path):
    path = decode_only(tiny_scenario("engine: {cuda_graphs: true, sdpa_backend: efficient}\n"))  # device: auto
    outcome = run(path, tmp_path / "out", device="cpu")
    assert all(p.status == "ok" for p in outcome.run.points)
    options = outcome.run.engine["options"]
    assert options["cuda_graphs"] is False and options["sdpa_backend"] == "auto"
    assert any("engine.cuda_graphs ignored" in w for w in outcome.run.warnings)
    assert any("engine.sdpa_backend 'efficient' ignored" in w for w in outcome.run.warnings)


def test_benchmark_scenarios():
    cpu = sc.load(ROOT / "scenarios" / "bench-engines-cpu.yaml")
    default = sc.load(ROOT / "scenarios" / "opt-125m.yaml")
    # The CPU ratio in the README is the default scenario's: same points, same engine.
    assert [p.key for p in sc.expand(cpu)] == [p.key for p in sc.expand(default)]
    assert cpu.engine == default.engine == EngineConfig()
    gpu = sc.load(ROOT / "scenarios" / "bench-engines.yaml")
    assert [sc.model_label(m) for m in gpu.models] == ["opt-125m", "opt-1.3b", "opt-6.7b"]
    decode = {p.batch_size for p in sc.expand(gpu) if p.workload == "decode"}
    assert decode == {1, 8, 64}
    assert gpu.engine.compile and gpu.engine.cuda_graphs and gpu.engine.static_cache


def test_roofline_figures():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import roofline

    arch = sc.model_card("opt-1.3b").architecture
    weights = roofline.weight_bytes(arch, 2)
    assert 2.5e9 < weights < 2.7e9  # ~1.3 B bf16 weights, positions table aside
    # Batch 1, 256 keys: the KV cache is a rounding error beside the weights.
    ceiling = roofline.decode_roofline_tokens_per_s(arch, 1, 128, 128, 2, 3.0e12)
    assert ceiling == pytest.approx(3.0e12 / weights, rel=0.03)
    # Batch 64: 64 tokens a step, but every row reads its own cache.
    assert roofline.decode_roofline_tokens_per_s(arch, 64, 128, 128, 2, 3.0e12) < 64 * ceiling
    probes = roofline.measure("cpu", seconds=0.05)
    assert probes["matmul"]["flops_per_s"] > 0 and probes["memory"]["bytes_per_s"] > 0


def test_benchmark_runs_both_engines_and_writes_ratios(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engines as bench

    path = tmp_path / "b.yaml"
    path.write_text(
        scenario_text(
            name="b",
            device="cpu",
            batch_sizes="[1]",
            workloads="{decode: {prompt_tokens: [4], new_tokens: [3]}}",
            repeats=2,
            idle_baseline_s=0.05,
        )
    )
    out = tmp_path / "bench"
    summary = bench.main(["--cpu", "--scenario", str(path), "--out", str(out), "--ceiling-seconds", "0.05"])
    (row,) = summary["rows"]
    assert row["key"] == "opt-tiny/decode/b1/p4-n3"
    assert row["engines"]["A"]["name"] == "native" and row["engines"]["B"]["name"] == "transformers"
    assert row["speedup"]["n"] == 2 and row["speedup"]["mean"] > 0
    assert 0 < row["A"]["roofline_fraction"]
    assert (out / "summary.md").read_text().startswith("# Engines: native (A) against transformers (B)")
    df = results.load(out / "runs")  # ordinary run files, one per engine
    assert set(df["engine"]) == {"native", "transformers"}
