"""Prompts for benchmarks: a local byte-level BPE tokenizer, prompt files, synthetic ids.

OPT uses GPT-2's byte-level BPE and starts every sequence with ``</s>`` (id 2); padding
is id 1 and goes on the left so that every row's last position is a real token.

Tokenizer files and prompts are read through ``carbonbench.files`` and handed to the
tokenizers library as text, never as paths: its own reader would block on a named pipe
and read /dev/zero until memory runs out.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import Tensor

from carbonbench.errors import CheckpointError, ConfigError, UserError
from carbonbench.opt.checkpoint import inside
from carbonbench.opt.model import PAD_ID
from carbonbench.reading import MAX_PROMPTS, MAX_TOKENIZER, JSONContentError, UnreadableFile, parse_json, read_text

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
    if os.path.lexists(path):  # present but a pipe or a link out of the directory: refused, not skipped
        text = _read(path, directory)
        try:
            return Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception for any bad file
            raise CheckpointError(f"{path}: unreadable tokenizer ({_one_line(exc)})") from None
    if not (os.path.lexists(vocab) and os.path.lexists(merges)):
        return None
    ids, pairs = _vocab_and_merges(vocab, merges, directory)
    try:
        tokenizer = Tokenizer(models.BPE(ids, pairs))
    except Exception as exc:
        raise CheckpointError(f"{directory}: unreadable vocab.json/merges.txt ({_one_line(exc)})") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bos_id = tokenizer.token_to_id(BOS)
    if bos_id is not None:
        # What HF's OPT tokenizer does (add_bos_token): the model was trained that way.
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos_id)])
    return tokenizer


def _read(path: Path, directory: Path) -> str:
    try:
        return read_text(inside(path, directory), MAX_TOKENIZER)
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from None


def _vocab_and_merges(vocab_path: Path, merges_path: Path, directory: Path) -> tuple[dict, list]:
    """vocab.json and merges.txt read as tokenizers' BPE.from_file reads them."""
    try:
        vocab = parse_json(_read(vocab_path, directory), finite=False)
    except (json.JSONDecodeError, JSONContentError, RecursionError) as exc:
        raise CheckpointError(f"{vocab_path}: unreadable vocab.json ({_one_line(exc)})") from None
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{vocab_path}: unreadable vocab.json (expected a JSON object of token ids)")
    # Entries whose id is not a number are passed over, as tokenizers does.
    ids = {str(k): v for k, v in vocab.items() if isinstance(v, int) and not isinstance(v, bool)}
    if any(not 0 <= v < 2**32 for v in ids.values()):
        raise CheckpointError(f"{vocab_path}: unreadable vocab.json (a token id outside 0..2^32)")
    merges = []
    lines = _read(merges_path, directory).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"{merges_path}: line {number}: expected two tokens separated by a space")
        merges.append((parts[0], parts[1]))
    return ids, merges


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
        text = read_text(path, MAX_PROMPTS)
    except UnreadableFile as exc:
        raise ConfigError(str(exc)) from None
    if path.suffix == ".txt":
        prompts = [p.strip() for p in BLANK_LINES.split(text)]
    else:
        lines = enumerate(text.splitlines(), 1)
        prompts = [_jsonl_prompt(path, n, line) for n, line in lines if line.strip()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ConfigError(f"{path}: no prompts")
    return prompts


def encode_prompts(tokenizer: Tokenizer, texts: list[str], batch: int, length: int) -> tuple[Tensor, Tensor, int, int]:
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
        record = parse_json(line, finite=False)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
    except JSONContentError as exc:
        raise ConfigError(f"{path}: line {number}: {exc.why}") from None
    except RecursionError:
        raise ConfigError(f"{path}: line {number}: invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: line {number}: expected a JSON object, got {line.strip()[:40]}")
    for key in PROMPT_KEYS:
        if isinstance(record.get(key), str):
            return record[key]
    raise ConfigError(f'{path}: line {number}: no "text" or "prompt" string')


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
