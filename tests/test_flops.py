"""Hardware FLOPs against torch's FlopCounterMode on the real models; model FLOPs against
the published formulas (Megatron-LM, Narayanan et al. 2021, appendix; PaLM, appendix B).

The counts run under SDPBackend.MATH. FlopCounterMode has no formula for the CPU's fused
attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) and would count its
attention as zero; the math backend spells attention out as matmuls, which it counts,
and computes the full query x key rectangle, masked or not: the dense attention that
carbonbench.flops counts. Every other matmul runs the same whatever the backend.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from carbonbench import flops
from carbonbench.engines import make_engine
from carbonbench.opt.card import Architecture, find_card
from carbonbench.opt.tokenizer import synthetic_prompts
from carbonbench.scenario import EngineConfig, ModelEntry, Point
from carbonbench.workloads import Decode, Inputs, Prefill, Train

# The shape features of opt-125m (pre-LN) and of opt-350m (post-LN, 16-wide embeddings
# projected in and out of the 32-wide layers, no final norm), at test size.
PRE = Architecture(n_layers=2, n_heads=4, d_model=32, ffn_dim=128, vocab_size=300, max_positions=64)
POST = Architecture(
    n_layers=2,
    n_heads=4,
    d_model=32,
    ffn_dim=128,
    vocab_size=300,
    max_positions=64,
    word_embed_proj_dim=16,
    layer_norm="post",
)
ARCHS = pytest.mark.parametrize("arch", [PRE, POST], ids=["pre-LN", "post-LN+projections"])

ENGINES = {
    "native": EngineConfig(),  # fused q/k/v, static cache
    "native-unfused-growing": EngineConfig(fused_qkv=False, static_cache=False),
    "transformers": EngineConfig(name="transformers"),
    "transformers-static": EngineConfig(name="transformers", static_cache=True),
}


def counted(fn) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _load(engine_name: str, arch: Architecture, tmp_path):
    """The engine and the model it loads from a card file for arch (random weights)."""
    import yaml

    config = ENGINES[engine_name]
    if config.name == "transformers":
        pytest.importorskip("transformers")
    card = tmp_path / "card.yaml"
    fields = {
        k: getattr(arch, k)
        for k in (
            "n_layers",
            "n_heads",
            "d_model",
            "ffn_dim",
            "vocab_size",
            "max_positions",
            "word_embed_proj_dim",
            "layer_norm",
        )
    }
    card.write_text(yaml.safe_dump({"name": "flops-test", "description": "test", "architecture": fields}))
    engine = make_engine(config, "cpu")
    return engine, engine.load(ModelEntry.of(str(card)), "cpu", torch.float32, 0)


def _inputs(batch: int, length: int) -> Inputs:
    return Inputs(synthetic_prompts(batch, length, 300, seed=0))


def _close(analytic: float, measured: int) -> bool:
    return abs(analytic / measured - 1) < 0.01


# ---- prefill and decode -------------------------------------------------------------------


@ARCHS
@pytest.mark.parametrize("engine_name", list(ENGINES))
def test_prefill_workload_matches_the_counter(engine_name, arch, tmp_path):
    engine, model = _load(engine_name, arch, tmp_path)
    model.eval()
    work = Prefill(model, Point("m", "prefill", 3, prompt_tokens=12), _inputs(3, 12), lambda: None, engine=engine)
    measured = counted(work.step)
    assert _close(work.hardware_flops_per_step, measured), (work.hardware_flops_per_step, measured)
    assert work.flops_per_step == work.hardware_flops_per_step
    # The model needs what the native engine runs; transformers also projects every
    # prompt position out of opt-350m's layers before keeping the last one.
    assert work.model_flops_per_step <= work.hardware_flops_per_step
    assert (work.model_flops_per_step == work.hardware_flops_per_step) == (
        engine.name == "native" or not arch.projects_embeddings
    )


@ARCHS
@pytest.mark.parametrize("engine_name", list(ENGINES))
def test_decode_steps_match_the_counter_at_several_cache_lengths(engine_name, arch, tmp_path):
    engine, model = _load(engine_name, arch, tmp_path)
    model.eval()
    B, prompt, new = 2, 6, 8
    cache = engine.new_cache(model, B, prompt + new)
    engine.prefill(model, synthetic_prompts(B, prompt, 300, seed=0), cache)
    token = torch.randint(4, 300, (B, 1))
    buffer = getattr(engine.config, "static_cache", False) and engine.name == "transformers"
    for pos in range(prompt, prompt + new - 1):  # caches of 7 to 13 filled slots
        measured = counted(lambda pos=pos: engine.decode_step(model, token, cache, pos))
        keys = prompt + new if buffer else pos + 1
        assert _close(flops.forward(arch, B, 1, keys, head=1), measured), (pos, measured)


@ARCHS
@pytest.mark.parametrize("engine_name", list(ENGINES))
def test_decode_workload_matches_the_counter(engine_name, arch, tmp_path):
    engine, model = _load(engine_name, arch, tmp_path)
    model.eval()
    point = Point("m", "decode", 2, prompt_tokens=6, new_tokens=5)
    work = Decode(model, point, _inputs(2, 6), lambda: None, engine=engine)
    measured = counted(work.step)
    assert _close(work.hardware_flops_per_step, measured), (work.hardware_flops_per_step, measured)
    model_needs = flops.prefill(arch, 2, 6).model + sum(flops.forward(arch, 2, 1, 6 + i, 1) for i in range(1, 5))
    assert work.model_flops_per_step == pytest.approx(model_needs)


@ARCHS
def test_the_fixed_shape_decode_step_scores_the_whole_static_cache(arch, tmp_path):
    """With compile or CUDA graphs the native engine decodes with OPT.step, every shape
    fixed by the cache: attention covers all prompt + new slots at every step. Compiled
    code cannot run under a dispatch mode, so the step is counted as the uncompiled
    function the engine compiles (NativeEngine.step_fn without compile)."""
    engine, model = _load("native", arch, tmp_path)
    model.eval()
    B, prompt, new = 2, 6, 8
    cache = engine.new_cache(model, B, prompt + new)
    engine.prefill(model, synthetic_prompts(B, prompt, 300, seed=0), cache)
    step, token = engine.step_fn(), torch.randint(4, 300, (B, 1))
    with torch.inference_mode():
        per_step = [
            counted(lambda pos=pos: step(model, token, cache, torch.tensor([pos])))
            for pos in range(prompt, prompt + new - 1)
        ]
    assert all(_close(flops.forward(arch, B, 1, prompt + new, head=1), m) for m in per_step), per_step

    compiling = make_engine(EngineConfig(compile=True), "cpu")  # built, never run here
    work = Decode(
        model,
        Point("m", "decode", B, prompt_tokens=prompt, new_tokens=new),
        _inputs(B, prompt),
        lambda: None,
        engine=compiling,
    )
    prefill_measured = counted(
        lambda: engine.prefill(
            model, synthetic_prompts(B, prompt, 300, seed=0), engine.new_cache(model, B, prompt + new)
        )
    )
    assert _close(work.hardware_flops_per_step, prefill_measured + sum(per_step))
    assert work.model_flops_per_step < work.hardware_flops_per_step  # the empty slots are waste


# ---- training -----------------------------------------------------------------------------


@ARCHS
@pytest.mark.parametrize("recompute", [False, True], ids=["no-checkpointing", "checkpointing"])
@pytest.mark.parametrize("engine_name", ["native", "native-unfused-growing", "transformers"])
def test_train_step_matches_the_counter(engine_name, recompute, arch, tmp_path):
    """Forward, backward and the AdamW step (no matmuls) of the real workload, with and
    without PyTorch's non-reentrant checkpointing of the decoder layers."""
    engine, model = _load(engine_name, arch, tmp_path)
    B, T = 2, 16
    work = Train(
        model,
        Point("m", "train", B, seq_len=T),
        _inputs(B, T),
        lambda: None,
        lr=1e-3,
        autocast_dtype=None,
        recompute=recompute,
        engine=engine,
    )
    measured = counted(work.step)
    assert _close(work.hardware_flops_per_step, measured), (work.hardware_flops_per_step, measured)
    assert work.model_flops_per_step == pytest.approx(3 * flops.forward(arch, B, T, T, head=T))
    if recompute:
        # The formula this replaced: four forwards, attention over the causal half.
        # PyTorch reruns neither the LM head nor, in a pre-LN layer, fc2.
        causal_half = 4 * arch.n_layers * arch.d_model * B * (T * T - T * (T + 1) / 2)
        replaced = 4 * (flops.forward(arch, B, T, T, head=T) - causal_half)
        assert not _close(replaced, measured), (replaced, measured)
    else:
        assert work.model_flops_per_step == work.hardware_flops_per_step


@pytest.mark.parametrize("name, seq", [("opt-125m", 128), ("opt-350m", 256)])
def test_real_sizes_on_the_meta_device(name, seq):
    """The published shapes (opt-350m's 512-wide embeddings and projections included),
    counted on the meta device: shapes only, no weights, no arithmetic."""
    arch = find_card(name).architecture
    engine = make_engine(None, "meta")
    model = engine.load(ModelEntry.of(name), "meta", torch.float32, 0)
    model.train()
    model.gradient_checkpointing = True
    ids = torch.randint(4, 300, (1, seq), device="meta")
    measured = counted(lambda: engine.train_loss(model, ids).backward())
    assert _close(flops.train(arch, 1, seq, True).hardware, measured)
    model.eval()
    with torch.no_grad():
        measured = counted(lambda: model(ids, last_only=True))
    assert _close(flops.prefill(arch, 1, seq).hardware, measured)


# ---- model FLOPs against the published formulas -------------------------------------------


def test_model_flops_are_megatrons_formula_for_opt_175b():
    """A 4d FFN, no embedding projections: the Megatron-LM appendix's count exactly."""
    arch = find_card("opt-175b").architecture
    B, s = 8, 2048
    l, h, V = arch.n_layers, arch.d_model, arch.vocab_size
    assert flops.train(arch, B, s).model == pytest.approx(flops.megatron_iteration(B, s, l, h, V, False), rel=1e-12)
    job = flops.job_from_architecture(arch, 300e9, s, recompute_layers=True)
    iterations = 300e9 / (B * s)
    assert job.hardware == pytest.approx(iterations * flops.megatron_iteration(B, s, l, h, V, True), rel=1e-12)
    assert job.model == pytest.approx(iterations * flops.megatron_iteration(B, s, l, h, V, False), rel=1e-12)
    # The metaseq logbook: "about 4.3e23" FLOPs for 300B tokens with recomputation.
    assert job.hardware == pytest.approx(4.3e23, rel=0.01)


def test_megatron_formula_is_the_appendix_terms_summed():
    # Per layer 24 B s h^2 + 4 B s^2 h forward, x3 (x4 recomputed); logits 2 B s h V, x3.
    B, s, l, h, V = 2, 128, 3, 64, 1000
    layer = 24 * B * s * h * h + 4 * B * s * s * h
    assert flops.megatron_iteration(B, s, l, h, V, True) == pytest.approx(4 * l * layer + 6 * B * s * h * V)
    assert flops.megatron_iteration(B, s, l, h, V, False) == pytest.approx(3 * l * layer + 6 * B * s * h * V)


@pytest.mark.parametrize("name", ["opt-125m", "opt-350m", "opt-1.3b", "opt-175b"])
def test_model_flops_are_palms_formula(name):
    """6 N + 12 L H Q T per token, exactly when N counts the matmul weights (the tied
    embedding is the LM head); with N the card's whole parameter count, the positions,
    biases and norms it adds stay within 1.5% (0.03% for opt-175b)."""
    arch = find_card(name).architecture
    s = 2048
    per_token = flops.train(arch, 1, s).model / s
    palm = flops.palm_per_token(arch.matmul_params(), arch.n_layers, arch.n_heads, arch.head_dim, s)
    assert per_token == pytest.approx(palm, rel=1e-12)
    whole = flops.palm_per_token(find_card(name).param_count(), arch.n_layers, arch.n_heads, arch.head_dim, s)
    assert per_token == pytest.approx(whole, rel=0.015 if name != "opt-175b" else 3e-4)


def test_job_from_params_agrees_with_the_architecture_for_opt_175b():
    card = find_card("opt-175b")
    arch = card.architecture
    by_arch = flops.job_from_architecture(arch, 300e9, 2048, recompute_layers=True)
    by_params = flops.job_from_params(
        card.param_count(), arch.n_layers, arch.d_model, 2048, 300e9, recompute_layers=True
    )
    assert by_params.model == pytest.approx(by_arch.model, rel=3e-4)
    assert by_params.hardware == pytest.approx(by_arch.hardware, rel=3e-4)
    no_recompute = flops.job_from_params(card.param_count(), arch.n_layers, arch.d_model, 2048, 300e9, False)
    assert no_recompute.hardware == no_recompute.model
