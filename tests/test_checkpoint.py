"""Checkpoint directories, tokenizers, prompts, and refusing models that cannot fit."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import carbonbench.opt as opt
from carbonbench.errors import CheckpointError, ConfigError, ModelTooLargeError
from carbonbench.opt.checkpoint import arch_from_hf_config, read_state_dict
from carbonbench.opt.tokenizer import (
    encode_prompts,
    load_tokenizer,
    read_prompts,
    synthetic_prompts,
)

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Energy per token is measured in joules.",
    "Carbon intensity depends on the grid and the hour of the day.",
] * 20


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.OPTConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
        do_layer_norm_before=False,
    )
    torch.manual_seed(0)
    return transformers.OPTForCausalLM(config).eval()


@pytest.fixture(scope="module")
def saved(hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    hf_model.save_pretrained(directory)
    return directory


@pytest.fixture
def ckpt(saved, tmp_path):
    """A private copy of the saved checkpoint, to damage."""
    return shutil.copytree(saved, tmp_path / "ckpt")


def same_weights(model, hf_model):
    expected = {k.removeprefix("model.decoder."): v for k, v in hf_model.state_dict().items()}
    return all(torch.equal(t, expected[name]) for name, t in model.state_dict().items())


def test_single_safetensors_file_loads(saved, hf_model):
    assert same_weights(opt.load(saved), hf_model)


def test_sharded_safetensors_loads(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="30KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert same_weights(opt.load(tmp_path), hf_model)


def test_pytorch_bin_loads_including_tied_lm_head(hf_model, tmp_path):
    hf_model.config.save_pretrained(tmp_path)
    state = hf_model.state_dict()
    assert "lm_head.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert same_weights(opt.load(tmp_path), hf_model)


def test_sharded_pytorch_bin_with_legacy_prefix_loads(hf_model, tmp_path):
    hf_model.config.save_pretrained(tmp_path)
    state = {k.removeprefix("model."): v for k, v in hf_model.state_dict().items()}  # "decoder.*"
    names = sorted(state)
    half = len(names) // 2
    shards = {"pytorch_model-1.bin": names[:half], "pytorch_model-2.bin": names[half:]}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, tmp_path / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert same_weights(opt.load(tmp_path), hf_model)


def test_safetensors_preferred_over_bin(ckpt, hf_model):
    (ckpt / "pytorch_model.bin").write_bytes(b"not a pickle")
    assert same_weights(opt.load(ckpt), hf_model)


def test_weights_cast_to_requested_dtype(saved):
    model = opt.load(saved, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def rewrite(ckpt, change):
    state = load_file(ckpt / "model.safetensors")
    change(state)
    save_file(state, ckpt / "model.safetensors")


def test_missing_tensor_is_named(ckpt):
    rewrite(ckpt, lambda s: s.pop("model.decoder.layers.1.fc1.weight"))
    with pytest.raises(CheckpointError, match=r"ckpt: missing tensors: layers\.1\.fc1\.weight$"):
        opt.load(ckpt)


def test_misshapen_tensor_is_named_with_both_shapes(ckpt):
    rewrite(ckpt, lambda s: s.update({"model.decoder.embed_tokens.weight": torch.zeros(1000, 64)}))
    expected = r"misshapen: embed_tokens\.weight \(1000, 64\) expected \(1000, 32\)"
    with pytest.raises(CheckpointError, match=expected):
        opt.load(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    rewrite(ckpt, lambda s: s.update({"model.decoder.layers.7.fc1.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected: layers\.7\.fc1\.weight"):
        opt.load(ckpt)


def test_all_problems_reported_in_one_line(ckpt):
    def damage(state):
        state.pop("model.decoder.project_in.weight")
        state["extra.weight"] = torch.zeros(1)
        state["lm_head.weight"] = torch.zeros(1000, 64)

    rewrite(ckpt, damage)
    with pytest.raises(CheckpointError) as info:
        opt.load(ckpt)
    message = str(info.value)
    assert "\n" not in message and str(ckpt) in message
    assert "missing tensors: project_in.weight" in message
    assert "unexpected: extra.weight" in message
    assert "misshapen: lm_head.weight (1000, 64) expected (1000, 32)" in message


def test_corrupt_safetensors_names_the_file(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable weights file"):
        opt.load(ckpt)


def test_corrupt_bin_names_the_file(ckpt):
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: unreadable weights file"):
        read_state_dict(ckpt)


class NotATensor:
    pass


def test_bin_with_arbitrary_objects_is_refused(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save({"embed_tokens.weight": NotATensor()}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: .*not a plain file of tensors"):
        read_state_dict(ckpt)


def test_missing_shard_names_the_file(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="30KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}: file not found"):
        opt.load(tmp_path)


def test_no_weights_at_all(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        opt.load(ckpt)


def test_missing_config_json(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        opt.load(ckpt)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"activation_function": "prelu"}, "activation_function"),
        ({"_remove_final_layer_norm": "yes"}, "_remove_final_layer_norm"),
        ({"hidden_size": "64"}, "hidden_size"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
        ({"model_type": "gpt2"}, "model_type"),
    ],
)
def test_unsupported_config_names_the_key(ckpt, change, key):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=f"config.json: {key}"):
        arch_from_hf_config(ckpt / "config.json")


def test_config_maps_to_architecture(saved):
    arch = arch_from_hf_config(saved / "config.json")
    assert arch == opt.Architecture(
        n_layers=2,
        n_heads=4,
        d_model=64,
        ffn_dim=128,
        vocab_size=1000,
        max_positions=64,
        word_embed_proj_dim=32,
        layer_norm="post",
    )


def test_card_checkpoint_field_loads_weights(saved, hf_model, tmp_path):
    card = tmp_path / "mini.yaml"
    card.write_text(
        "architecture: {n_layers: 2, n_heads: 4, d_model: 64, ffn_dim: 128, vocab_size: 1000,\n"
        "  max_positions: 64, word_embed_proj_dim: 32, layer_norm: post}\n"
        f"checkpoint: {saved}\n"
    )
    assert same_weights(opt.load(card), hf_model)
    card.write_text(card.read_text().replace("n_layers: 2", "n_layers: 3"))
    with pytest.raises(CheckpointError, match="does not match card mini .*n_layers 3 vs 2"):
        opt.load(card)


def test_model_too_large_is_refused_before_allocating(monkeypatch):
    seen = []
    monkeypatch.setattr(opt.loading, "available_bytes", lambda device: seen.append(device) or 8e9)
    needed = opt.find_card("opt-175b").param_count() * 2
    with pytest.raises(ModelTooLargeError) as info:
        opt.load("opt-175b", dtype=torch.float16)
    assert str(info.value) == (f"opt-175b needs {needed / 1e9:.1f} GB of weights in float16 but cpu has 8.0 GB free")
    assert seen == [torch.device("cpu")]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer

    directory = tmp_path_factory.mktemp("tok")
    trainer = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0..3
    trainer.train_from_iterator(SENTENCES, vocab_size=400, special_tokens=specials)
    trainer.save(str(directory / "tokenizer.json"))
    trainer.save_model(str(directory))  # vocab.json + merges.txt
    return directory


def test_tokenizer_json_loads_and_encodes(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    enc = tok.encode("The quick brown fox")
    assert enc.ids and tok.decode(enc.ids) == "The quick brown fox"


def test_vocab_and_merges_load_with_bos(tokenizer_dir, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, tmp_path)
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("Energy per token").ids
    assert ids[0] == 2  # </s>, as OPT's tokenizer starts every sequence
    assert ids[1:] == load_tokenizer(tokenizer_dir).encode("Energy per token").ids


def test_no_tokenizer_files_gives_none(tmp_path):
    assert load_tokenizer(tmp_path) is None


def test_corrupt_tokenizer_names_the_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json: unreadable tokenizer"):
        load_tokenizer(tmp_path)


def test_encode_prompts_left_pads_truncates_and_counts(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    texts = ["Energy per token", "The quick brown fox jumps over the lazy dog. " * 5]
    ids, mask, words, tokens = encode_prompts(tok, texts, batch=3, length=16)
    assert ids.shape == mask.shape == (3, 16)
    short = tok.encode(texts[0]).ids
    assert mask[0].tolist() == [0] * (16 - len(short)) + [1] * len(short)
    assert ids[0, : 16 - len(short)].eq(1).all() and ids[0, 16 - len(short) :].tolist() == short
    assert torch.equal(ids[2], ids[0])  # texts are cycled to fill the batch
    assert mask[1].all() and ids[1].tolist() == tok.encode(texts[1]).ids[-16:]  # keeps the end
    assert tokens == int(mask.sum())
    assert 2 * 3 < words < tokens


def test_read_prompts_txt_paragraphs_and_jsonl(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\nstill first\n\n  \nsecond prompt\n")
    assert read_prompts(txt) == ["first prompt\nstill first", "second prompt"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"text": "a"}\n\n{"prompt": "b"}\n')
    assert read_prompts(jsonl) == ["a", "b"]


@pytest.mark.parametrize(
    "content, why",
    [
        ('{"text": "a"}\n{"text": \n', "line 2: invalid JSON"),
        ('{"text": "a"}\n[1]\n', r"line 2: expected a JSON object, got \[1\]"),
        ('{"title": "a"}\n', 'line 1: no "text" or "prompt"'),
        ("\n\n", "no prompts"),
    ],
)
def test_bad_prompt_files_name_file_and_line(tmp_path, content, why):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"bad.jsonl: {why}"):
        read_prompts(path)


def test_synthetic_prompts_are_reproducible():
    a = synthetic_prompts(4, 32, 1000, seed=1)
    assert torch.equal(a, synthetic_prompts(4, 32, 1000, seed=1))
    assert not torch.equal(a, synthetic_prompts(4, 32, 1000, seed=2))
    assert a.shape == (4, 32) and a.dtype == torch.long
    assert a.min() >= 4 and a.max() < 1000
