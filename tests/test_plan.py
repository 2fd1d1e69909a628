"""Memory planning: weights, KV cache, training states and activations, devices needed."""

from __future__ import annotations

import json
import math

import pytest
from support.cli import invoke_cli

from carbonbench.errors import UserError
from carbonbench.hardware import get_hardware
from carbonbench.opt.card import find_card
from carbonbench.plan import (
    kv_cache_bytes,
    plan_memory,
    training_activations_bytes,
    weights_bytes,
)


def test_weights_by_dtype():
    card = find_card("opt-1.3b")
    n = card.param_count()
    assert weights_bytes(card, "fp32") == 4 * n
    assert weights_bytes(card, "fp16") == weights_bytes(card, "bf16") == 2 * n
    int8 = weights_bytes(card, "int8")
    a = card.arch
    linear = a.n_layers * (4 * a.d_model**2 + 2 * a.d_model * a.ffn_dim)
    assert int8 == linear + 2 * (n - linear)  # embeddings, biases and norms stay 16-bit
    assert n < int8 < 2 * n


def test_kv_cache_formula():
    card = find_card("opt-1.3b")  # 24 layers, d_model 2048
    assert kv_cache_bytes(card, "bf16", batch_size=8, seq_len=2048) == 2 * 24 * 8 * 2048 * 2048 * 2
    assert kv_cache_bytes(card, "fp32", 8, 2048) == 2 * kv_cache_bytes(card, "bf16", 8, 2048)
    assert kv_cache_bytes(card, "int8", 8, 2048) == kv_cache_bytes(card, "bf16", 8, 2048)


def test_training_activations_follow_korthikanti():
    card = find_card("opt-1.3b")
    s, b, h, a, L, V = 2048, 4, 2048, 32, 24, 50272
    per_layer = s * b * h * (34 + 5 * a * s / h)
    logits = b * s * V * 4
    assert training_activations_bytes(card, "bf16", b, s, recompute=False) == int(L * per_layer + logits)
    assert training_activations_bytes(card, "bf16", b, s, recompute=True) == int(L * 2 * s * b * h + per_layer + logits)
    assert training_activations_bytes(card, "fp32", b, s, False) > training_activations_bytes(card, "bf16", b, s, False)


def test_training_states_are_16_bytes_per_parameter():
    card = find_card("opt-1.3b")
    n = card.param_count()
    p = plan_memory(card, get_hardware("h100-sxm"), dtypes=("fp32", "bf16", "int8"), batch_size=1, seq_len=2048)
    assert [m.dtype for m in p.training] == ["fp32", "bf16"]  # int8 is inference-only
    for m in p.training:
        assert m.weights_bytes + m.gradients_bytes + m.optimizer_bytes == 16 * n
        assert m.total_recompute_bytes < m.total_bytes
        assert m.devices_needed_recompute <= m.devices_needed
    assert [m.dtype for m in p.inference] == ["fp32", "bf16", "int8"]


def test_opt_175b_devices_needed():
    card = find_card("opt-175b")
    hw = get_hardware("a100-80gb")
    p = plan_memory(card, hw, dtypes=("bf16",), batch_size=1, seq_len=2048)
    usable = 0.9 * 80e9
    assert p.usable_bytes_per_device == int(usable)
    inf = p.inference[0]
    assert inf.weights_bytes == 2 * card.param_count()  # about 349 GB
    assert inf.devices_needed == math.ceil(inf.total_bytes / int(usable)) == 5
    assert not inf.fits_one_device
    train = p.training[0]
    assert train.devices_needed_recompute == math.ceil(train.total_recompute_bytes / int(usable))
    # 16 bytes x 175B parameters alone is about 2.8 TB: dozens of 80 GB devices.
    assert train.devices_needed_recompute >= 16 * card.param_count() / usable


def test_small_model_fits_one_device():
    p = plan_memory(find_card("opt-125m"), get_hardware("t4"), batch_size=1, seq_len=512)
    assert all(m.fits_one_device and m.devices_needed == 1 for m in p.inference)
    assert p.training[1].fits_one_device_recompute


def test_more_batch_or_length_never_needs_fewer_devices():
    card, hw = find_card("opt-13b"), get_hardware("l40s")
    previous = 0
    for b in (1, 4, 16, 64):
        m = plan_memory(card, hw, dtypes=("bf16",), batch_size=b, seq_len=1024, training=False).inference[0]
        assert m.devices_needed >= previous
        previous = m.devices_needed


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(batch_size=0), "batch size"),
        (dict(seq_len=-1), "sequence length"),
        (dict(dtypes=("fp8",)), "unknown dtype 'fp8'"),
        (dict(dtypes=("int8",), inference=False), "not a training dtype"),
        (dict(reserve_fraction=1.0), "reserve"),
        (dict(inference=False, training=False), "nothing to plan"),
    ],
)
def test_bad_plan_arguments(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        plan_memory(find_card("opt-tiny"), get_hardware("t4"), **kwargs)


def _plan(*args: str):
    return invoke_cli("plan", *args)


def test_plan_cli_text_and_json():
    r = _plan("opt-175b", "--hardware", "a100-80gb")
    assert r.exit_code == 0, r.output
    assert "Inference, batch 1 x 2048 tokens" in r.output
    assert "Training with Adam" in r.output and "recompute" in r.output
    assert "Korthikanti" in r.output and "ZeRO" in r.output
    r = _plan(
        "opt-1.3b",
        "--hardware",
        "t4",
        "--dtype",
        "fp16",
        "--dtype",
        "int8",
        "--batch-size",
        "4",
        "--seq-len",
        "1024",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["hardware"] == "t4" and d["device_memory_bytes"] == 16e9
    assert [m["dtype"] for m in d["inference"]] == ["fp16", "int8"]
    assert [m["dtype"] for m in d["training"]] == ["fp16"]
    row = d["inference"][0]
    assert row["total_bytes"] == row["weights_bytes"] + row["kv_cache_bytes"] + row["activations_bytes"]
    assert row["fits_one_device"] is True
    r = _plan("opt-1.3b", "--hardware", "h100-sxm", "--mode", "inference", "--format", "json")
    assert json.loads(r.output)["training"] == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (["opt-1.3b", "--hardware", "b200"], "unknown hardware 'b200'"),
        (["opt-1.3b", "--hardware", "h100"], "known hardware: a100-40gb"),
        (["opt-1.3b", "--hardware", "t4", "--batch-size", "0"], "0 is not in the range"),
        (["opt-1.3b", "--hardware", "t4", "--seq-len", "-5"], "-5 is not in the range"),
        (["opt-1.3b", "--hardware", "t4", "--dtype", "fp8"], "'fp8' is not one of"),
        (["opt-1.3b", "--hardware", "t4", "--mode", "training", "--dtype", "int8"], "int8 is for inference only"),
        (["opt-13", "--hardware", "t4"], "unknown model card 'opt-13'"),
        (["opt-1.3b"], "Missing option '--hardware'"),
    ],
)
def test_plan_bad_input_exit_2(args, needle):
    r = _plan(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output
