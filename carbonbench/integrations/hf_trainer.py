"""Energy per logging step and per epoch of a Hugging Face ``Trainer``, as a run file.

    from carbonbench.integrations.hf_trainer import CarbonbenchCallback
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[CarbonbenchCallback("my-finetune", out="results/", country="FRA")])
    trainer.train()

The callback opens a ``carbonbench.measure_session`` when training begins and closes it
when training ends. Its windows (points of the run file; see carbonbench.api.session):

- ``log-interval``: from the start of training, or the previous log, to each log. Its
  figures go into that log (``energy_j``, ``co2e_g``, ``energy_method``), so the
  Trainer's own log history, its printer and its reporting integrations carry them;
- ``epoch``: each epoch, from ``on_epoch_begin`` to ``on_epoch_end``;
- ``train``: the whole of training, whose figures go into the Trainer's final summary
  log as ``train_energy_j`` and ``train_co2e_g``.

Tokens are counted when the Trainer counts them (``include_num_input_tokens_seen``):
then each window has J/token; otherwise energy only. Windows overlap (an interval can
cross an epoch's end): each is measured on its own, so their energies must not be added.

Under several processes only process zero measures: every GPU its node shows and its
node's CPU; other nodes are not metered, and the run file's warnings say so.

transformers and accelerate (the ``transformers`` extra) are imported here only, so
carbonbench imports without them.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        "carbonbench.integrations.hf_trainer needs transformers: pip install 'carbonbench[transformers]'"
    ) from exc

from carbonbench.api.session import MeasureSession, measure_session
from carbonbench.api.window import Measure, WindowResult

# The Trainer's final log, speed_metrics("train", ...) + train_loss; no step log has it.
SUMMARY_KEY = "train_loss"


class CarbonbenchCallback(TrainerCallback):
    """Records energy per logging interval, per epoch and for the whole training.

    ``name`` names the run file; ``session`` (an open ``MeasureSession``) records into
    one you manage instead; the other keywords are ``carbonbench.measure_session``'s
    (``out``, ``device``, ``country``, ``grid_g_per_kwh``, ``idle_baseline_s``, ...).
    After training, ``path`` is the run file and ``last_log`` / ``epochs`` / ``train``
    the latest results.
    """

    def __init__(self, name: str = "trainer", *, session: Optional[MeasureSession] = None, **settings: Any):
        self.name, self.settings = name, settings
        self.session: Optional[MeasureSession] = session
        self._owned = session is None
        if self._owned:
            measure_session(name, **settings)  # bad settings fail here, not after the model is loaded
        self._windows: dict[str, tuple[Measure, int, int]] = {}  # open: (window, step, tokens) at its start
        self.last_log: Optional[WindowResult] = None
        self.epochs: list[WindowResult] = []
        self.train: Optional[WindowResult] = None
        self.path = None

    # -- windows ----------------------------------------------------------------------------
    def _open(self, name: str, state) -> None:
        window = self.session.measure(name)
        self._windows[name] = (window, state.global_step, state.num_input_tokens_seen or 0)
        window.__enter__()

    def _close(self, name: str, state) -> Optional[WindowResult]:
        opened = self._windows.pop(name, None)
        if opened is None:
            return None
        window, step0, tokens0 = opened
        # Known only now: the steps the window covered and, when the Trainer counts them, its tokens.
        window.steps = max(state.global_step - step0, 0)
        tokens = (state.num_input_tokens_seen or 0) - tokens0
        window.tokens = tokens if tokens > 0 else None
        window.__exit__(None, None, None)
        return window.result

    # -- the Trainer's events ---------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self._owned:
            self.session = measure_session(self.name, **self.settings).open()
        elif self.session is None or self.session.run_file is None:
            raise RuntimeError("CarbonbenchCallback(session=...) needs an open session")
        self.path = self.session.path
        if args.world_size > 1:
            self.session.run_file.warn(
                f"the Trainer ran {args.world_size} processes: only process zero measured (every GPU its node "
                "shows and its node's CPU); other nodes were not metered"
            )
        self._open("train", state)
        self._open("log-interval", state)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.session is not None and "train" in self._windows:
            self._open("epoch", state)

    def on_epoch_end(self, args, state, control, **kwargs):
        result = self._close("epoch", state)
        if result is not None:
            self.epochs.append(result)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "log-interval" not in self._windows:
            return  # evaluate() outside training, or not process zero
        figures = {}
        self.last_log = self._close("log-interval", state)
        figures.update(_figures(self.last_log, ""))
        if SUMMARY_KEY in logs:
            self.train = self._close("train", state)
            figures.update(_figures(self.train, "train_"))
        else:
            self._open("log-interval", state)
        logs.update(figures)
        # log_history took its copy of the logs before the callbacks ran: add them there too.
        if state.log_history:
            state.log_history[-1].update(figures)

    def on_train_end(self, args, state, control, **kwargs):
        for name in ("epoch", "log-interval", "train"):
            result = self._close(name, state)
            if name == "epoch" and result is not None:
                self.epochs.append(result)
            if name == "train" and result is not None:
                self.train = result
        if self._owned and self.session is not None:
            self.session.close("complete")


def _figures(result: Optional[WindowResult], prefix: str) -> dict[str, Any]:
    """What a log gets: energy and CO2e with the method, left out when nothing was measured."""
    if result is None or result.energy_j is None:
        return {}
    return {
        f"{prefix}energy_j": result.energy_j,
        f"{prefix}co2e_g": result.co2e_g,
        f"{prefix}energy_method": result.method,
    }


def attach(trainer, *args: Any, **kwargs: Any) -> CarbonbenchCallback:
    """Add a ``CarbonbenchCallback`` to ``trainer`` ahead of its other callbacks, so that
    the reporting integrations (TensorBoard, W&B, ...), which run before callbacks
    passed to ``Trainer(callbacks=...)``, receive the energy figures in every log."""
    callback = CarbonbenchCallback(*args, **kwargs)
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback
