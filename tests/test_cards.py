"""Every model card builds, and its parameter count is exactly Hugging Face's."""

import pytest
import torch

import carbonbench.opt as opt
from carbonbench.opt.card import known_cards

transformers = pytest.importorskip("transformers")

CARDS = sorted(known_cards())
SIZES = ("125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b", "175b")
PUBLISHED = [f"opt-{size}" for size in SIZES]


def hf_config(arch: opt.Architecture):
    return transformers.OPTConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.d_model,
        num_hidden_layers=arch.n_layers,
        ffn_dim=arch.ffn_dim,
        num_attention_heads=arch.n_heads,
        max_position_embeddings=arch.max_positions,
        word_embed_proj_dim=arch.word_embed_proj_dim,
        do_layer_norm_before=arch.pre_ln,
        activation_function=arch.activation,
    )


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are yielded once


def test_every_published_size_has_a_card():
    assert set(PUBLISHED) <= set(CARDS)


@pytest.mark.parametrize("name", CARDS)
def test_card_builds_on_meta_with_its_param_count(name):
    card = opt.find_card(name)
    model = opt.build(card.arch, device="meta")
    assert model.device.type == "meta"
    assert count(model) == card.param_count()


@pytest.mark.parametrize("name", CARDS)
def test_param_count_equals_transformers(name):
    card = opt.find_card(name)
    with torch.device("meta"):
        hf = transformers.OPTForCausalLM(hf_config(card.arch))
    assert count(hf) == card.param_count()


def test_parameter_names_mirror_transformers_decoder():
    arch = opt.find_card("opt-350m").arch
    with torch.device("meta"):
        hf = transformers.OPTForCausalLM(hf_config(arch))
    hf_names = {k.removeprefix("model.decoder.") for k in hf.state_dict() if k != "lm_head.weight"}
    assert set(opt.build(arch, device="meta").state_dict()) == hf_names


def test_opt_350m_is_post_ln_with_512_wide_embeddings():
    arch = opt.find_card("opt-350m").arch
    assert arch.layer_norm == "post" and not arch.pre_ln
    assert arch.word_embed_proj_dim == 512 and arch.projects_embeddings
    model = opt.build(arch, device="meta")
    assert model.embed_tokens.weight.shape == (50272, 512)
    assert model.project_in.weight.shape == (1024, 512)
    assert model.project_out.weight.shape == (512, 1024)
    assert not hasattr(model, "final_layer_norm")


def test_other_sizes_are_pre_ln_without_projection():
    for name in PUBLISHED:
        if name != "opt-350m":
            arch = opt.find_card(name).arch
            assert arch.pre_ln and not arch.projects_embeddings, name


def test_load_by_name_and_by_yaml_path_give_the_same_random_model():
    by_name = opt.load("opt-tiny", seed=3)
    by_path = opt.load(str(known_cards()["opt-tiny"]), seed=3)
    for (name, a), b in zip(by_name.state_dict().items(), by_path.state_dict().values()):
        assert torch.equal(a, b), name
    logits = by_name(torch.tensor([[2, 100, 200]]))
    assert logits.shape == (1, 3, 50272) and logits.dtype == torch.float32
