"""What a point is fed: its prompts (text through the model's tokenizer, else seeded
synthetic ids), checked before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from tokenizers import Tokenizer

from carbonbench.distributed.parallel import Layout
from carbonbench.opt.checkpoint import check_checkpoint
from carbonbench.opt.tokenizer import encode_prompts, load_tokenizer, read_prompts, synthetic_prompts
from carbonbench.request_stream import read_request_file
from carbonbench.scenario import ModelEntry, Point, Scenario
from carbonbench.serving import ServeInputs
from carbonbench.workloads import Inputs


def check_inputs(scenario: Scenario) -> None:
    """A broken checkpoint or prompts file is a UserError now, before out_dir is touched."""
    if scenario.workloads.prompts:
        read_prompts(scenario.workloads.prompts)
    if scenario.workloads.serve and scenario.workloads.serve.prompts:
        read_request_file(scenario.workloads.serve.prompts)
    for entry in scenario.entries:
        card = entry.card
        if card.checkpoint:  # a card file names its checkpoint: name the card by its path
            check_checkpoint(
                card.checkpoint, card.architecture, card.name if Path(entry.source).is_dir() else card.path
            )
            load_tokenizer(card.checkpoint)


def tokenizer_for(entry: ModelEntry) -> Optional[Tokenizer]:
    return load_tokenizer(entry.card.checkpoint) if entry.card.checkpoint else None


def point_inputs(
    point: Point, layout: Layout, scenario: Scenario, tokenizer: Optional[Tokenizer], vocab: int, device: torch.device
) -> Inputs:
    """The point's batch on device: text prompts when the scenario has them and the model a
    tokenizer, else synthetic ids. Data parallel: one global batch of batch_size rows per
    replica, of which this rank keeps its own."""
    if point.workload == "serve":  # each request brings its own prompt
        serve = ServeInputs(scenario.workloads.serve, scenario.workloads.serve.seed, tokenizer)
        return Inputs(torch.zeros(1, 1, dtype=torch.long, device=device), serve=serve)
    length = point.seq_len if point.workload == "train" else point.prompt_tokens
    prompts = scenario.workloads.prompts
    rows = point.batch_size * layout.dp
    if point.workload != "train" and tokenizer is not None and prompts:
        ids, mask, words, tokens = encode_prompts(tokenizer, read_prompts(prompts), rows, length)
        return Inputs(layout.local_rows(ids).to(device), layout.local_rows(mask).to(device), words, tokens)
    ids = synthetic_prompts(rows, length, vocab, seed=scenario.seed)
    return Inputs(layout.local_rows(ids).to(device))
