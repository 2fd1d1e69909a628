"""codecarbon alongside our meters, so every run carries a second, independent opinion.

Always ``OfflineEmissionsTracker`` with the scenario's country and region: the online
tracker geolocates over the network and, offline, silently falls back to Quebec's grid.
Each point is a codecarbon task (``start_task``/``stop_task``), whose CPU, GPU and RAM
energy are stored next to ours (results.py reports ours minus codecarbon's).

codecarbon swallows its own exceptions (``start``/``stop`` are wrapped in a suppress
that logs a warning and returns None). So every result is checked, its warnings are
captured into ``describe()["log"]``, and any failure becomes None plus a recorded error:
nothing here raises into the runner.

Isolation: codecarbon reads ``~/.codecarbon.config``, ``./.codecarbon.config`` and
``CODECARBON_*`` variables into ``tracker._external_conf`` and takes any setting the
constructor was not given from there (e.g. a PUE, or an API endpoint). With ``isolate``
the tracker's ``_external_conf`` is an empty dict whatever is assigned to it, so those
sources are never consulted; nothing process-wide (cwd, HOME, os.environ) is touched,
which matters with other threads running.

codecarbon initialises NVML and never calls ``nvmlShutdown``; neither do we (see
``carbonbench.meters.nvml``), so the two can share the library for the whole run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

from carbonbench.settings import CarbonConfig

KWH_TO_J = 3.6e6
KG_TO_G = 1000.0
_MAX_LOG = 50
# The warning codecarbon gives for allow_multiple_runs=True, which we set on purpose.
_OUR_OWN_CHOICE = "Multiple instances of codecarbon are allowed"


class _LogCapture(logging.Handler):
    """Keeps codecarbon's warnings and errors, which are all it says when it fails."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if len(self.messages) >= _MAX_LOG or message.startswith(_OUR_OWN_CHOICE):
            return
        text = f"{record.levelname}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.messages.append(text)


def _tracker_class(isolate: bool):
    from codecarbon import OfflineEmissionsTracker

    if not isolate:
        return OfflineEmissionsTracker

    class IsolatedOfflineEmissionsTracker(OfflineEmissionsTracker):
        """Ignores codecarbon config files and CODECARBON_* environment variables."""

        @property
        def _external_conf(self) -> dict:
            return {}

        @_external_conf.setter
        def _external_conf(self, value) -> None:
            pass  # the hierarchical config codecarbon just read is dropped here

    return IsolatedOfflineEmissionsTracker


class CodecarbonSidecar:
    def __init__(
        self,
        carbon: CarbonConfig,
        enabled: bool = True,
        output_dir: Optional[Path] = None,
        sample_interval_s: float = 15.0,
        isolate: bool = True,
    ):
        self.carbon = carbon
        self.enabled = enabled
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.sample_interval_s = sample_interval_s
        self.isolate = isolate
        self.errors: list[str] = []
        self._tracker = None
        self._task: Optional[str] = None
        self._capture = _LogCapture()
        self._console_levels: dict[logging.Handler, int] = {}
        self._version: Optional[str] = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Construct and start the tracker (about 1 s: hardware detection). Never raises."""
        if not self.enabled or self._started:
            return
        logger = logging.getLogger("codecarbon")
        try:
            import codecarbon

            self._version = codecarbon.__version__
            kwargs: dict[str, Any] = dict(
                country_iso_code=self.carbon.country,
                region=self.carbon.region,
                measure_power_secs=self.sample_interval_s,
                save_to_file=self.output_dir is not None,
                save_to_api=False,
                log_level="warning",
                pue=1.0,  # PUE is applied when results are read, to our energy and theirs alike
                allow_multiple_runs=True,  # no lock file: other codecarbon users are not ours to stop
                tracking_mode="machine",
            )
            if self.output_dir is not None:
                # codecarbon writes a run CSV and one per-task CSV: keep them in a folder of
                # their own, next to (not mixed with) our result files.
                folder = self.output_dir / "codecarbon"
                folder.mkdir(parents=True, exist_ok=True)
                kwargs.update(output_dir=str(folder), output_file="emissions.csv")
            if self.carbon.grid_g_per_kwh is not None:
                kwargs["force_carbon_intensity_g_co2e_kwh"] = self.carbon.grid_g_per_kwh
            if self._capture not in logger.handlers:
                logger.addHandler(self._capture)
            self._quiet_console(logger)
            self._tracker = _tracker_class(self.isolate)(**kwargs)
            self._quiet_console(logger)
            self._tracker.start()
            if getattr(self._tracker, "_start_time", None) is None:
                self._fail("start() returned without starting (it logs and swallows its errors)")
                return
            self._started = True
        except Exception as exc:  # codecarbon must never cost us the measurements
            self._fail(f"start: {type(exc).__name__}: {exc}")

    def _quiet_console(self, logger: logging.Logger) -> None:
        # codecarbon's console handler would print every warning we capture anyway;
        # its errors still reach the console. Levels are restored when we detach.
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                self._console_levels.setdefault(h, h.level)
                h.setLevel(max(h.level, logging.ERROR))

    def _fail(self, message: str) -> None:
        self.errors.append(message)

    def begin_point(self, label: str) -> None:
        if not self._started:
            return
        if self._task is not None:
            self.end_point()  # a point that never ended must not swallow the next one
        try:
            self._tracker.start_task(label)
            if getattr(self._tracker, "_active_task", None) is None:
                self._fail(f"start_task({label!r}) did not start a task")
                return
            self._task = label
        except Exception as exc:
            self._fail(f"start_task({label!r}): {type(exc).__name__}: {exc}")

    def end_point(self) -> Optional[dict[str, Any]]:
        """The energy codecarbon saw since ``begin_point``, in J and g; None if it failed."""
        if not self._started or self._task is None:
            return None
        label, self._task = self._task, None
        try:
            data = self._tracker.stop_task()
        except Exception as exc:
            self._fail(f"stop_task({label!r}): {type(exc).__name__}: {exc}")
            return None
        if data is None:
            self._fail(f"stop_task({label!r}) returned None")
            return None
        return self._convert(data, label)

    def stop(self) -> Optional[dict[str, Any]]:
        """Stop the tracker; its totals for the whole run, or None if it failed."""
        if not self._started:
            self._detach()
            return None
        if self._task is not None:
            self.end_point()
        self._started = False
        try:
            emissions = self._tracker.stop()
            data = getattr(self._tracker, "final_emissions_data", None)
        except Exception as exc:
            self._fail(f"stop: {type(exc).__name__}: {exc}")
            return None
        finally:
            self._detach()
        if emissions is None or data is None:
            self._fail("stop() returned None (it logs and swallows its errors)")
            return None
        return self._convert(data, "run")

    def _detach(self) -> None:
        logging.getLogger("codecarbon").removeHandler(self._capture)
        for handler, level in self._console_levels.items():
            handler.setLevel(level)
        self._console_levels.clear()

    def _convert(self, data, label: str) -> Optional[dict[str, Any]]:
        try:
            out = {
                "label": label,
                "duration_s": float(data.duration),
                "energy_j": float(data.energy_consumed) * KWH_TO_J,
                "cpu_energy_j": float(data.cpu_energy) * KWH_TO_J,
                "gpu_energy_j": float(data.gpu_energy) * KWH_TO_J,
                "ram_energy_j": float(data.ram_energy) * KWH_TO_J,
                "emissions_g": float(data.emissions) * KG_TO_G,
                "country_iso_code": data.country_iso_code,
                "region": data.region,
            }
        except (AttributeError, TypeError, ValueError) as exc:
            self._fail(f"{label}: unreadable EmissionsData: {type(exc).__name__}: {exc}")
            return None
        bad = [k for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            self._fail(f"{label}: non-finite {', '.join(bad)}")
            return None
        return out

    def describe(self) -> dict[str, Any]:
        conf = getattr(self._tracker, "_conf", {}) or {}
        return {
            "enabled": self.enabled,
            "version": self._version,
            "tracker": "OfflineEmissionsTracker",
            "mode": conf.get("hardware"),
            "country_iso_code": self.carbon.country,
            "region": self.carbon.region,
            "forced_grid_g_per_kwh": self.carbon.grid_g_per_kwh,
            "measure_power_secs": self.sample_interval_s,
            "tracking_mode": conf.get("tracking_mode"),
            "pue": 1.0,
            "isolated": self.isolate,
            "cpu_model": conf.get("cpu_model"),
            "gpu_model": conf.get("gpu_model"),
            "errors": list(self.errors),
            "log": list(self._capture.messages),
        }
