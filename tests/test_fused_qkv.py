"""The native engine's fused_qkv: one [3D, D] matmul for q, k and v, the same numbers."""

import copy

import pytest
import torch

from carbonbench import opt
from carbonbench import scenario as sc
from carbonbench.engines import make_engine
from carbonbench.errors import ConfigError
from carbonbench.opt.card import Architecture
from carbonbench.opt.model import PAD_ID
from carbonbench.opt.tokenizer import synthetic_prompts
from carbonbench.runner import Runner
from carbonbench.scenario import EngineConfig, ModelEntry, Point
from carbonbench.workloads import Inputs, Train

VOCAB, PROMPT, NEW = 300, 10, 8
ARCHS = {
    "pre-LN": Architecture(n_layers=2, n_heads=4, d_model=32, ffn_dim=64, vocab_size=VOCAB, max_positions=64),
    "post-LN": Architecture(
        n_layers=2,
        n_heads=4,
        d_model=32,
        ffn_dim=64,
        vocab_size=VOCAB,
        max_positions=64,
        word_embed_proj_dim=16,
        layer_norm="post",
    ),  # the 350m layout
}


def pair(arch):
    """(unfused, fused) models with the same weights, every tensor perturbed so that
    biases and norms matter (OPT's init zeroes biases)."""
    plain = opt.build(arch, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    fused = copy.deepcopy(plain).fuse_qkv()
    return plain.eval(), fused.eval()


def prompts(padded: bool):
    ids = synthetic_prompts(3, PROMPT, VOCAB, seed=2)
    if not padded:
        return ids, None
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding of different lengths
    mask[2, :7] = 0
    return ids.masked_fill(mask == 0, PAD_ID), mask


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS.keys())
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_fused_model_computes_what_the_unfused_one_does(arch, padded):
    plain, fused = pair(arch)
    ids, mask = prompts(padded)
    with torch.no_grad():
        assert (fused(ids, mask) - plain(ids, mask)).abs().max() < 1e-5  # every position's logits

    tokens = opt.generate(plain, ids, NEW, mask)
    assert torch.equal(opt.generate(fused, ids, NEW, mask), tokens)
    assert len(set(tokens.flatten().tolist())) > 3  # a degenerate model would prove little

    # Prefill into a cache, then the fixed-shape step (compile / CUDA-graph path) and the
    # plain decode step, fused against unfused.
    caches = {m: m.new_cache(3, PROMPT + NEW) for m in (plain, fused)}
    logits = {m: opt.prefill(m, ids, caches[m], mask) for m in (plain, fused)}
    assert (logits[fused] - logits[plain]).abs().max() < 1e-5
    token = logits[plain].argmax(-1, keepdim=True)
    pos = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        for i in range(NEW - 1):
            pos.fill_(PROMPT + i)
            expected = plain.step(token, caches[plain], pos)
            assert (fused.step(token, caches[fused], pos) - expected).abs().max() < 1e-5
            token = expected.argmax(-1, keepdim=True)
    # The eager decode step that generate uses, logits this time.
    assert (_decoded(fused, ids, mask, tokens) - _decoded(plain, ids, mask, tokens)).abs().max() < 1e-5


def _decoded(model, ids, mask, tokens):
    cache = model.new_cache(3, PROMPT + 2)
    opt.prefill(model, ids, cache, mask)
    return opt.decode_step(model, tokens[:, :1], cache, PROMPT)


def qkv_of(model, i: int, what: str) -> torch.Tensor:
    """Layer i's q, k and v weights (or biases) of an unfused model, stacked as fuse_qkv does."""
    attn = model.layers[i].self_attn
    return torch.cat([getattr(getattr(attn, f"{n}_proj"), what) for n in "qkv"])


@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS.keys())
def test_a_training_step_is_the_same_with_sgd(arch):
    plain, fused = (m.train() for m in pair(arch))
    ids = synthetic_prompts(2, 16, VOCAB, seed=3)
    losses = {}
    for model in (plain, fused):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loss = opt.loss_fn(model(ids), ids)
        loss.backward()
        losses[model] = loss.item()
        if model is fused:  # the fused gradient is the three gradients stacked
            for i in range(arch.n_layers):
                grad = fused.layers[i].self_attn.qkv_proj.weight.grad
                expected = torch.cat([getattr(plain.layers[i].self_attn, f"{n}_proj").weight.grad for n in "qkv"])
                assert (grad - expected).abs().max() < 1e-6
        optimizer.step()
    assert losses[fused] == pytest.approx(losses[plain], abs=1e-6)
    for i in range(arch.n_layers):
        qkv = fused.layers[i].self_attn.qkv_proj
        assert (qkv.weight - qkv_of(plain, i, "weight")).abs().max() < 1e-6
        assert (qkv.bias - qkv_of(plain, i, "bias")).abs().max() < 1e-6


LR = 1e-3


def test_engine_training_with_fused_adamw_updates_the_fused_weight():
    """Through the engine and the Train workload: fp32 weights, AdamW fused, its
    optimizer built from model.parameters() after load (so over qkv_proj)."""
    point = Point("opt-tiny", "train", 2, seq_len=16)
    ids = synthetic_prompts(2, 16, 50272, seed=4)
    models, losses = {}, {}
    for fused in (False, True):
        engine = make_engine(EngineConfig(fused_qkv=fused), "cpu")
        model = engine.load(ModelEntry.of("opt-tiny"), "cpu", torch.float32, seed=0)
        train = Train(
            model, point, Inputs(ids), lambda: None, lr=LR, autocast_dtype=None, recompute=fused, engine=engine
        )
        assert train.optimizer.defaults["fused"] is True
        steps = []
        for _ in range(3):
            train.step()
            steps.append(float(train.last_loss))
        train.close()
        models[fused], losses[fused] = model, steps
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert losses[True][-1] < losses[True][0]  # it trains
    # Adam divides by |gradient|: where a gradient is near zero, its last bits (a [3D, D]
    # matmul rounds differently from three [D, D] ones) move the update by a small
    # fraction of lr. Exact gradients are checked with SGD above.
    for i in range(2):
        qkv = models[True].layers[i].self_attn.qkv_proj.weight
        assert (qkv - qkv_of(models[False], i, "weight")).abs().max() < 1e-3 * LR


def test_native_engine_fuses_by_default_and_not_when_asked():
    fused = make_engine(EngineConfig(), "cpu")
    plain = make_engine(EngineConfig(fused_qkv=False), "cpu")
    assert fused.describe()["options"]["fused_qkv"] is True and plain.describe()["options"]["fused_qkv"] is False
    a = fused.load(ModelEntry.of("opt-tiny"), "cpu", torch.float32, seed=0)
    b = plain.load(ModelEntry.of("opt-tiny"), "cpu", torch.float32, seed=0)
    for layer in a.layers:
        assert layer.self_attn.fused and not hasattr(layer.self_attn, "q_proj")
        assert layer.self_attn.qkv_proj.weight.shape == (3 * 64, 64)
    for layer in b.layers:
        assert not layer.self_attn.fused and not hasattr(layer.self_attn, "qkv_proj")
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert EngineConfig(name="transformers").fused_qkv is False


def test_fusing_twice_is_a_no_op_and_keeps_the_parameter_count():
    plain, fused = pair(ARCHS["pre-LN"])
    params = list(fused.parameters())
    assert sum(p.numel() for p in params) == sum(p.numel() for p in plain.parameters())
    assert len(params) == len(list(plain.parameters())) - 4 * 2  # 6 tensors became 2, per layer
    keys = set(fused.state_dict())
    assert "layers.0.self_attn.qkv_proj.weight" in keys and "layers.0.self_attn.q_proj.weight" not in keys
    assert "layers.0.self_attn.q_proj.weight" in plain.state_dict()  # unfused: Hugging Face's names
    weight = fused.layers[0].self_attn.qkv_proj.weight
    assert weight.grad_fn is None and weight.requires_grad and weight.is_leaf
    assert fused.fuse_qkv() is fused
    assert all(a is b for a, b in zip(fused.parameters(), params, strict=True))


def test_a_sharded_model_is_never_fused():
    """Tensor parallelism shards q/k/v by name: it refuses a fused model, and fuse_qkv
    refuses a tensor-parallel one (a real one-process gloo group and mesh)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from carbonbench.distributed.parallel import apply_tp

    plain, fused = pair(ARCHS["pre-LN"])
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        with pytest.raises(ValueError, match="separate q/k/v"):
            apply_tp(fused, mesh)
        apply_tp(plain, mesh)
        with pytest.raises(ValueError, match="unsharded model"):
            plain.fuse_qkv()
        assert not plain.layers[0].self_attn.fused
        # One process: fused_qkv stays in effect (a multi-process job drops it with a note,
        # checked in test_distributed.py).
        assert make_engine(EngineConfig(), "cpu").config.fused_qkv is True
    finally:
        dist.destroy_process_group()


def test_fused_qkv_with_transformers_is_a_config_error(tiny_scenario):
    path = tiny_scenario("engine: {name: transformers, fused_qkv: true}\n")
    with pytest.raises(ConfigError) as info:
        sc.load(path)
    message = str(info.value)
    assert "engine.fused_qkv: is a native-engine setting" in message and "\n" not in message
    assert sc.load(tiny_scenario("engine: {name: transformers, fused_qkv: false}\n")).engine.fused_qkv is False


def test_the_run_records_fused_qkv_as_in_effect(tiny_scenario, tmp_path):
    path = tiny_scenario("engine: {fused_qkv: false}\n")
    path.write_text(
        path.read_text().replace("  prefill: {prompt_tokens: [16]}\n", "").replace("  train: {seq_len: [16]}\n", "")
    )
    outcome = Runner(sc.load(path), tmp_path / "out").run()
    assert [p.status for p in outcome.run.points] == ["ok"]
    assert outcome.run.engine["options"]["fused_qkv"] is False
    assert not any("fused_qkv" in w for w in outcome.run.warnings)
