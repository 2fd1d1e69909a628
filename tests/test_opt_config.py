"""Which OPTConfig settings a checkpoint may use: what transformers accepts, we accept.

The logits of each variant are compared with transformers in test_opt_oracle.py; here:
every parameter-free activation against ACT2FN, the parameter counts of the variants,
fusing q/k/v without biases, and one clear refusal for each setting we cannot honour.
"""

import json

import pytest
import torch

import carbonbench.opt as opt
from carbonbench.errors import CheckpointError
from carbonbench.opt.activations import FUNCTIONS, LEARNED
from carbonbench.opt.card import ACTIVATIONS
from carbonbench.opt.checkpoint import arch_from_hf_config

transformers = pytest.importorskip("transformers")
from transformers.activations import ACT2FN  # noqa: E402

TINY = dict(
    vocab_size=300, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4, max_position_embeddings=32
)


def test_every_transformers_activation_is_implemented_or_refused():
    assert set(FUNCTIONS) == set(ACTIVATIONS)
    assert set(ACT2FN) == set(ACTIVATIONS) | set(LEARNED)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_transformers(name):
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    expected = ACT2FN[name](x)
    assert torch.allclose(FUNCTIONS[name](x), expected, rtol=1e-6, atol=1e-7), name


VARIANTS = [
    {},
    {"enable_bias": False},
    {"layer_norm_elementwise_affine": False},
    {"_remove_final_layer_norm": True},
    {"tie_word_embeddings": False},
    {"do_layer_norm_before": False, "word_embed_proj_dim": 16},
    {
        "enable_bias": False,
        "layer_norm_elementwise_affine": False,
        "tie_word_embeddings": False,
        "activation_function": "silu",
        "pad_token_id": None,
    },
]


@pytest.mark.parametrize("settings", VARIANTS, ids=lambda s: ",".join(s) or "default")
def test_variant_parameter_count_and_names_equal_transformers(settings, tmp_path):
    config = transformers.OPTConfig(**TINY, **settings)
    config.save_pretrained(tmp_path)
    arch = arch_from_hf_config(tmp_path / "config.json")
    with torch.device("meta"):
        hf = transformers.OPTForCausalLM(config)
    ours = opt.build(arch, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == arch.param_count()
    assert arch.param_count() == sum(p.numel() for p in hf.parameters())  # tied weights counted once
    hf_names = {k.removeprefix("model.decoder.") for k in hf.state_dict()}
    if arch.tie_word_embeddings:
        hf_names.discard("lm_head.weight")
    assert set(ours.state_dict()) == hf_names


def test_fused_qkv_without_biases_gives_the_same_logits():
    arch = opt.Architecture(n_layers=2, n_heads=4, d_model=32, ffn_dim=64, vocab_size=300, max_positions=32, bias=False)
    model = opt.build(arch, seed=1)
    ids = torch.randint(4, 300, (2, 9))
    with torch.no_grad():
        before = model(ids)
        model.fuse_qkv()
        after = model(ids)
    assert model.layers[0].self_attn.qkv_proj.bias is None
    assert torch.allclose(before, after, atol=1e-5)


def write_config(tmp_path, **changes):
    config = transformers.OPTConfig(**TINY).to_dict()
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"activation_function": "prelu"},
            r"activation_function = 'prelu' has learned parameters, which carbonbench's OPT does not implement",
        ),
        ({"activation_function": "xielu"}, r"'xielu' has learned parameters"),
        ({"activation_function": "swiglu"}, r"'swiglu' is not an activation transformers knows \(ACT2FN\) either"),
        ({"enable_bias": "no"}, r"enable_bias = 'no' must be true or false"),
        ({"do_layer_norm_before": 1}, r"do_layer_norm_before = 1 must be true or false"),
        ({"pad_token_id": 300}, r"pad_token_id = 300 must be a token id below vocab_size \(300\)"),
        ({"pad_token_id": "1"}, r"pad_token_id = '1' must be a token id or null"),
        ({"hidden_size": 30}, r"num_attention_heads = 4 must divide d_model \(30\)"),
    ],
)
def test_unsupported_settings_are_one_clear_error(tmp_path, changes, message):
    path = write_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as err:
        arch_from_hf_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_transformers_also_refuses_what_we_call_unknown():
    with pytest.raises(KeyError):
        transformers.OPTForCausalLM(transformers.OPTConfig(**TINY, activation_function="swiglu"))


def test_a_card_can_use_the_variants(tmp_path):
    card = tmp_path / "variant.yaml"
    card.write_text(
        "architecture: {n_layers: 1, n_heads: 2, d_model: 16, ffn_dim: 32, vocab_size: 100, "
        "max_positions: 16, activation: gelu, bias: false, layer_norm_affine: false, "
        "remove_final_layer_norm: true, tie_word_embeddings: false}\n"
    )
    model = opt.load(card)
    assert not hasattr(model, "final_layer_norm") and model.lm_head.weight.shape == (100, 16)
    assert model.layers[0].fc1.bias is None and model.layers[0].final_layer_norm.weight is None
    assert model(torch.tensor([[2, 5, 7]])).shape == (1, 3, 100)
