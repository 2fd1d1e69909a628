"""Prompts for benchmarks: a local byte-level BPE tokenizer, prompt files, synthetic ids.

OPT uses GPT-2's byte-level BPE and starts every sequence with ``</s>`` (id 2); padding
is id 1 and goes on the left so that every row's last position is a real token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import Tensor

from carbonbench.errors import CheckpointError, ConfigError, UserError
from carbonbench.opt.model import PAD_ID

BOS = "</s>"
FIRST_ORDINARY_ID = 4  # ids 0..3 are <s>, <pad>, </s>, <unk>
PROMPT_KEYS = ("text", "prompt")
BLANK_LINES = re.compile(r"\n\s*\n")


def load_tokenizer(directory: str | Path) -> Tokenizer | None:
    """The tokenizer saved in directory (tokenizer.json, or vocab.json + merges.txt).

    None when the directory has neither, so callers can fall back to synthetic prompts.
    """
    directory = Path(directory)
    path, vocab, merges = (directory / n for n in ("tokenizer.json", "vocab.json", "merges.txt"))
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for any bad file
            raise CheckpointError(f"{path}: unreadable tokenizer ({_one_line(exc)})") from None
    if not (vocab.is_file() and merges.is_file()):
        return None
    try:
        tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as exc:
        why = _one_line(exc)
        raise CheckpointError(f"{directory}: unreadable vocab.json/merges.txt ({why})") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bos_id = tokenizer.token_to_id(BOS)
    if bos_id is not None:
        # What HF's OPT tokenizer does (add_bos_token): the model was trained that way.
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]
        )
    return tokenizer


def synthetic_prompts(batch: int, length: int, vocab_size: int, seed: int = 0) -> Tensor:
    """Random token ids [batch, length], the same for the same arguments on any machine."""
    if vocab_size <= FIRST_ORDINARY_ID:
        raise UserError(f"vocab_size must exceed {FIRST_ORDINARY_ID}, got {vocab_size}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST_ORDINARY_ID, vocab_size, (batch, length), generator=gen)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a .txt file (blank-line-separated paragraphs) or a .jsonl file
    (one object per line with a "text" or "prompt" string)."""
    path = Path(path)
    if path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"{path}: prompts must be a .txt or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read file ({_one_line(exc)})") from None
    if path.suffix == ".txt":
        prompts = [p.strip() for p in BLANK_LINES.split(text)]
    else:
        lines = enumerate(text.splitlines(), 1)
        prompts = [_jsonl_prompt(path, n, line) for n, line in lines if line.strip()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ConfigError(f"{path}: no prompts")
    return prompts


def encode_prompts(
    tokenizer: Tokenizer, texts: list[str], batch: int, length: int
) -> tuple[Tensor, Tensor, int, int]:
    """A batch [batch, length] of prompts, left-padded with id 1.

    texts are repeated to fill the batch; a prompt longer than length keeps its last
    length tokens. Returns (input_ids, attention_mask, words, tokens), where words and
    tokens count what the batch really holds, for a tokens-per-word ratio.
    """
    rows = [texts[i % len(texts)] for i in range(batch)]
    input_ids = torch.full((batch, length), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    words = tokens = 0
    for i, (text, enc) in enumerate(zip(rows, tokenizer.encode_batch(rows))):
        if not enc.ids:
            raise UserError(f"prompt {text[:40]!r} encodes to no tokens")
        ids, offsets = enc.ids[-length:], enc.offsets[-length:]
        input_ids[i, length - len(ids) :] = torch.tensor(ids)
        attention_mask[i, length - len(ids) :] = 1
        words += len(text[offsets[0][0] :].split())
        tokens += len(ids)
    return input_ids, attention_mask, words, tokens


def _jsonl_prompt(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: line {number}: expected a JSON object, got {line.strip()[:40]}")
    for key in PROMPT_KEYS:
        if isinstance(record.get(key), str):
            return record[key]
    raise ConfigError(f"{path}: line {number}: no \"text\" or \"prompt\" string")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
