"""Our OPT against the transformers implementation, as an oracle, on tiny random models.

Both layouts are covered: pre-LN (every size but 350m) and the 350m style (post-LN,
no final layer norm, embeddings narrower than the model with project_in/out), and the
OPTConfig variants other checkpoints use: no final layer norm on a pre-LN model, and
no biases with weightless norms, another activation, an untied LM head and another
padding id.
"""

import pytest
import torch

import carbonbench.opt as opt
from carbonbench.errors import UserError
from carbonbench.opt.model import PAD_ID
from carbonbench.opt.tokenizer import synthetic_prompts

transformers = pytest.importorskip("transformers")

VOCAB, PROMPT, NEW = 1000, 12, 10
VARIANTS = {
    "pre-ln": dict(do_layer_norm_before=True, word_embed_proj_dim=64),
    "post-ln-350m-style": dict(do_layer_norm_before=False, word_embed_proj_dim=32),
    "pre-ln-no-final-norm": dict(do_layer_norm_before=True, _remove_final_layer_norm=True),
    "no-bias-gelu-untied": dict(
        enable_bias=False,
        layer_norm_elementwise_affine=False,
        activation_function="gelu_new",
        tie_word_embeddings=False,
        word_embed_proj_dim=32,
        pad_token_id=0,
    ),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    """(transformers model, our model loaded from its save_pretrained directory)."""
    config = transformers.OPTConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        max_position_embeddings=64,
        dropout=0.0,
        **VARIANTS[request.param],
    )
    torch.manual_seed(0)
    hf = transformers.OPTForCausalLM(config).eval()
    with torch.no_grad():  # HF inits biases to 0 and norms to 1: perturb so every tensor matters
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    return hf, opt.load(directory)


def prompts(batch=3, seed=1):
    ids = synthetic_prompts(batch, PROMPT, VOCAB, seed=seed)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding of different lengths
    mask[2, :9] = 0
    return ids.masked_fill(mask == 0, PAD_ID), mask


def test_logits_match_without_mask(pair):
    hf, ours = pair
    ids, _ = prompts()
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids)).abs().max()
    assert diff <= 1e-4


def test_logits_match_with_left_padding(pair):
    hf, ours = pair
    ids, mask = prompts()
    with torch.no_grad():
        diff = (hf(ids, attention_mask=mask).logits - ours(ids, mask)).abs()
    assert diff[mask.bool()].max() <= 1e-4
    assert torch.isfinite(diff).all()


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_generation_matches_hf(pair, padded):
    hf, ours = pair
    ids, mask = prompts()
    mask = mask if padded else None
    expected = hf.generate(
        ids,
        attention_mask=mask if padded else torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
    )[:, PROMPT:]
    got = opt.generate(ours, ids, NEW, mask)
    assert got.shape == (3, NEW) and got.dtype == torch.long
    assert torch.equal(got, expected)
    assert len(set(got.flatten().tolist())) > 3  # a degenerate model would prove little


def full_recompute_greedy(model, ids, mask, n):
    mask = torch.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids, mask)[:, -1].argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids[:, -n:]


@pytest.mark.parametrize("padded", [False, True])
def test_cached_decoding_equals_full_recomputation(pair, padded):
    _, ours = pair
    ids, mask = prompts()
    mask = mask if padded else None
    expected = full_recompute_greedy(ours, ids, mask, NEW)
    assert torch.equal(opt.generate(ours, ids, NEW, mask), expected)

    # Logits, step by step, including a prompt fed in two chunks (causal mask with offset).
    tokens = full_recompute_greedy(ours, ids, mask, 4)
    sequence = torch.cat([ids, tokens], 1)
    full_mask = None if mask is None else torch.cat([mask, torch.ones_like(tokens)], 1)
    with torch.no_grad():
        reference = ours(sequence, full_mask)
    cache = ours.new_cache(3, sequence.shape[1])
    head, tail = (None, None) if mask is None else (mask[:, :7], mask[:, 7:])
    with torch.inference_mode():
        first = ours(ids[:, :7], head, cache=cache)
        second = ours(ids[:, 7:], tail, cache=cache, start_pos=7)
    positions = range(PROMPT, PROMPT + 3)
    steps = [opt.decode_step(ours, sequence[:, p : p + 1], cache, p) for p in positions]
    got = torch.cat([first, second, torch.stack(steps, 1)], 1)  # logits at positions 0 .. S+2
    real = torch.ones_like(got[..., 0], dtype=torch.bool) if mask is None else full_mask.bool()
    real = real[:, : got.shape[1]]
    assert (got - reference[:, :-1]).abs()[real].max() <= 1e-5


def test_prefill_returns_last_position_logits(pair):
    _, ours = pair
    ids, mask = prompts()
    cache = ours.new_cache(3, PROMPT + 1)
    last = opt.prefill(ours, ids, cache, mask)
    with torch.no_grad():
        assert (last - ours(ids, mask)[:, -1]).abs().max() <= 1e-5


def test_training_step_matches_hf(pair):
    hf, ours = pair
    hf.train(), ours.train()
    ids = synthetic_prompts(2, PROMPT, VOCAB, seed=5)
    ids[0, 3] = PAD_ID  # the padding embedding row gets no gradient in either
    hf.zero_grad(), ours.zero_grad()
    hf_loss = hf(ids, labels=ids).loss
    loss = opt.loss_fn(ours(ids), ids)
    hf_loss.backward(), loss.backward()
    hf.eval(), ours.eval()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - hf_loss.item()) <= 1e-5
    ours_params = dict(ours.named_parameters())
    hf_params = dict(hf.named_parameters())
    assert len(hf_params) == len(ours_params)
    for name, p in hf_params.items():
        mine = ours_params[name.removeprefix("model.decoder.")]
        assert (p.grad - mine.grad).abs().max() <= 1e-4, name


def test_forward_keeps_the_model_dtype(pair):
    _, ours = pair
    half = opt.build(ours.arch, dtype=torch.bfloat16)
    assert half(torch.tensor([[2, 5, 6]])).dtype == torch.bfloat16
    assert half.new_cache(1, 8).k.dtype == torch.bfloat16


def test_generation_longer_than_the_position_table_is_refused(pair):
    _, ours = pair
    with pytest.raises(UserError, match="exceed the model's max_positions of 64"):
        opt.generate(ours, torch.tensor([[2] * 60]), 5)


def test_init_weights_is_seeded_and_opt_style():
    arch = opt.Architecture(n_layers=2, n_heads=4, d_model=64, ffn_dim=128, vocab_size=VOCAB, max_positions=64)
    a, b, c = (opt.build(arch, seed=s) for s in (7, 7, 8))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers[0].fc1.weight, c.layers[0].fc1.weight)
    assert abs(a.embed_tokens.weight.std().item() - 0.02) < 0.002
    assert not a.embed_tokens.weight[PAD_ID].any()
    assert not a.layers[1].self_attn.q_proj.bias.any()
    assert torch.equal(a.final_layer_norm.weight, torch.ones(64))
