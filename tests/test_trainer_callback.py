"""CarbonbenchCallback in a real transformers Trainer: a tiny OPTForCausalLM, a few steps, the CPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("accelerate")  # the Trainer needs it; the test extra installs it
from transformers import OPTConfig, OPTForCausalLM, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import carbonbench  # noqa: E402
import carbonbench.results as results  # noqa: E402
from carbonbench.errors import UserError  # noqa: E402
from carbonbench.integrations.hf_trainer import CarbonbenchCallback, attach  # noqa: E402
from carbonbench.runfile import read_run  # noqa: E402

EPOCHS, STEPS_PER_EPOCH, LOGGING_STEPS = 2, 4, 3  # 16 sequences in batches of 4; logs at steps 3 and 6


def tiny_trainer(tmp_path, callbacks=(), tokens_seen=True) -> Trainer:
    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=64,
        hidden_size=16,
        ffn_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        word_embed_proj_dim=16,
        max_position_embeddings=64,
    )
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(4, 64, (16, 16))]
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=4,
        logging_steps=LOGGING_STEPS,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        include_num_input_tokens_seen=tokens_seen,
    )
    return Trainer(model=OPTForCausalLM(config), args=args, train_dataset=data, callbacks=list(callbacks))


def test_energy_per_logging_step_and_epoch_goes_to_the_log_and_a_run_file(tmp_path):
    energy = CarbonbenchCallback("tiny-opt", out=tmp_path / "results", device="cpu", country="FRA")
    trainer = tiny_trainer(tmp_path, [energy])
    trainer.train()

    history = trainer.state.log_history
    step_logs, summary = history[:-1], history[-1]
    assert [h["step"] for h in step_logs] == [3, 6]
    for h in step_logs:  # the Trainer's own log carries the figures, with their method
        assert h["energy_j"] > 0 and h["co2e_g"] > 0 and h["energy_method"] == "estimated"
        assert h["co2e_g"] == pytest.approx(h["energy_j"] / 3.6e6 * 56.039, rel=1e-3)
    assert "train_loss" in summary and summary["train_energy_j"] == pytest.approx(energy.train.energy_j)
    assert summary["train_energy_j"] >= sum(h["energy_j"] for h in step_logs)

    run = read_run(energy.path)
    assert run.status == "complete" and run.scenario_name == "tiny-opt" and run.engine_name == "custom"
    points = {p.model: p for p in run.points}
    assert set(points) == {"train", "log-interval", "epoch"}
    logs = points["log-interval"].repeats
    # One interval per step log, plus the tail from the last one to the final summary log.
    assert [r.steps for r in logs] == [3, 3, 2] and [r.energy_j for r in logs[:2]] == pytest.approx(
        [h["energy_j"] for h in step_logs]
    )
    assert [r.tokens for r in logs] == [3 * 64, 3 * 64, 2 * 64]  # 4 sequences of 16 tokens a step
    epochs = points["epoch"].repeats
    assert len(epochs) == EPOCHS == len(energy.epochs) and [r.steps for r in epochs] == [STEPS_PER_EPOCH] * EPOCHS
    train = points["train"].repeats[0]
    assert train.steps == EPOCHS * STEPS_PER_EPOCH and train.tokens == 512
    assert train.duration_s >= sum(r.duration_s for r in epochs)
    assert all(r.status == "ok" and r.energy_method == "estimated" for p in run.points for r in p.repeats)

    df = results.load([tmp_path / "results"])
    assert set(df.model) == {"train", "log-interval", "epoch"} and df.joules_per_token.notna().all()


def test_without_token_counts_the_windows_have_energy_but_no_joules_per_token(tmp_path):
    energy = CarbonbenchCallback("no-tokens", out=tmp_path, device="cpu")
    tiny_trainer(tmp_path, [energy], tokens_seen=False).train()
    run = read_run(energy.path)
    reps = [r for p in run.points for r in p.repeats]
    assert all(r.tokens == 0 and r.joules_per_token is None and r.energy_j > 0 for r in reps)


def test_it_records_into_a_session_the_caller_keeps_open(tmp_path):
    with carbonbench.measure_session("mine", out=tmp_path, device="cpu") as s:
        with s.measure("before"):
            pass
        energy = CarbonbenchCallback(session=s)
        tiny_trainer(tmp_path, [energy]).train()
        assert read_run(s.path).status == "running"  # the callback did not close it
    run = read_run(s.path)
    assert run.status == "complete" and {p.model for p in run.points} == {"before", "train", "log-interval", "epoch"}


def test_attach_puts_it_ahead_of_the_reporting_integrations(tmp_path):
    trainer = tiny_trainer(tmp_path)
    energy = attach(trainer, "attached", out=tmp_path, device="cpu")
    assert trainer.callback_handler.callbacks[0] is energy
    seen = []

    class Integration(TrainerCallback):  # stands for TensorBoard, W&B, ...: reads every log
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    trainer.add_callback(Integration())
    trainer.train()
    assert all("energy_j" in logs for logs in seen) and len(seen) == 3


def test_bad_settings_fail_when_the_callback_is_made():
    with pytest.raises(UserError, match="unknown device"):
        CarbonbenchCallback("x", device="tpu")
