"""Hugging Face Transformers: a `TrainerCallback` that adds energy and CO2e to the Trainer's logs.

    >>> from transformers import Trainer
    >>> from meter.integrations.transformers import EnergyCallback
    >>> trainer = Trainer(model=model, args=args, train_dataset=data)    # doctest: +SKIP
    >>> energy = EnergyCallback().attach(trainer)                         # doctest: +SKIP
    >>> trainer.train()                                                   # doctest: +SKIP
    >>> energy.totals.energy_j, trainer.state.log_history[-1]["train_energy_j"]  # doctest: +SKIP

It writes into the ``logs`` of the Trainer's own log calls, so every ``report_to`` backend
(TensorBoard, W&B, MLflow...), the printed logs and ``trainer.state.log_history`` get them:

======================================  ==========================================================
a training log (every ``logging_steps``) ``energy_j``, ``co2e_g``, ``power_w``: since the previous
                                        log; ``energy_total_j``, ``co2e_total_g``: since training
                                        started
the first log after an epoch            ``epoch_energy_j``, ``epoch_co2e_g``, ``epoch_power_w``
an evaluation (``eval_`` metrics)       ``eval_energy_j``, ``eval_co2e_g``, ``eval_power_w`` (with
                                        the evaluation's metric prefix); also in the metrics that
                                        ``trainer.evaluate()`` and ``trainer.predict()`` return
the end of training                     ``train_energy_j``, ``train_co2e_g``, ``train_power_w``
                                        (and ``train_co2e_market_g``, ``train_embodied_co2e_g``
                                        where those apply)
======================================  ==========================================================

The Trainer calls callbacks in order, and puts those passed with ``callbacks=[...]`` after its
``report_to`` integrations: `EnergyCallback.attach` inserts the callback ahead of them, so they
see the energy keys. With ``callbacks=[...]`` the keys still reach ``state.log_history`` and
the printed logs. Each epoch ends with a log (``control.should_log``), so per-epoch figures
are logged whatever ``logging_steps`` is; ``log_epochs=False`` turns that off.

Under ``torchrun``/``accelerate launch`` each rank meters its own GPU and local rank 0 the
host's CPU and DRAM (`meter.ranks`); the figures are summed over the ranks with
``torch.distributed``, at points every rank reaches together. Metering never breaks training:
a failure is logged and training goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from meter.integrations.distributed import RankWindows, describe

from meter import Measurement, Meter
from meter.core import run_report_hint
from meter.ranks import Ranks

if TYPE_CHECKING:
    from transformers import (
        DefaultFlowCallback,
        Trainer,
        TrainerCallback,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )
else:
    try:
        from transformers import (
            DefaultFlowCallback,
            Trainer,
            TrainerCallback,
            TrainerControl,
            TrainerState,
            TrainingArguments,
        )
    except ImportError as error:
        raise ImportError(
            "meter.integrations.transformers needs Hugging Face Transformers, which is not "
            "installed: pip install 'ai-energy-meter[transformers]'"
        ) from error

__all__ = ["EnergyCallback"]

log = logging.getLogger("meter")


def _figures(prefix: str, m: Measurement) -> dict[str, float]:
    out = {f"{prefix}energy_j": m.energy_j, f"{prefix}power_w": m.avg_power_w}
    if m.co2e_g is not None:
        out[f"{prefix}co2e_g"] = m.co2e_g
    return out


def _eval_prefix(logs: MutableMapping[str, Any]) -> str | None:
    """The metric prefix of an evaluation's logs (``eval`` for ``eval_loss``...), else None."""
    for key in logs:
        if key.endswith("_runtime"):
            prefix = key[: -len("_runtime")]
            if f"{prefix}_samples_per_second" in logs and not _is_summary(logs):
                return prefix
    return None


def _is_summary(logs: MutableMapping[str, Any]) -> bool:
    """The log the Trainer writes once at the end of training."""
    return "train_runtime" in logs and "total_flos" in logs


def _is_step(logs: MutableMapping[str, Any]) -> bool:
    """A training log of the Trainer's (every ``logging_steps`` and at epoch ends)."""
    return "loss" in logs and "learning_rate" in logs


class EnergyCallback(TrainerCallback):
    """Meters a Transformers `Trainer` run and adds energy and CO2e to its logs.

    ``meter``: the `meter.Meter` to use (default: the process default, `meter.get_meter`, or
    one built for this rank when the launcher did not export ``LOCAL_RANK``). ``sync_cuda``:
    synchronise CUDA at window boundaries (default: the meter's setting). ``gather``: sum the
    ranks over ``torch.distributed`` (True). ``log_epochs``: end every epoch with a log so its
    figures are logged at once (True). ``verbose``: print a line per epoch and the totals on
    the main process.

    After training: ``totals`` is the training run's `meter.Measurement` (summed over the
    ranks), ``local_totals`` this rank's own; ``epochs`` and ``evaluations`` hold one per epoch
    and per evaluation.
    """

    def __init__(
        self,
        meter: Meter | None = None,
        *,
        sync_cuda: bool | None = None,
        gather: bool = True,
        log_epochs: bool = True,
        verbose: bool = True,
    ) -> None:
        self.windows = RankWindows(meter, sync_cuda=sync_cuda, gather=gather)
        self.log_epochs = log_epochs
        self.verbose = verbose
        self.totals: Measurement | None = None
        self.local_totals: Measurement | None = None
        self.epochs: list[Measurement] = []
        self.evaluations: list[Measurement] = []
        self._pending: dict[str, float] = {}
        self._total_energy_j = 0.0
        self._total_co2e_g: float | None = None
        self._ready = False
        self._attached = False
        self._warned_order = False

    @property
    def meter(self) -> Meter | None:
        """The meter in use (None before training or evaluation starts)."""
        return self.windows.meter

    def attach(self, trainer: Trainer) -> EnergyCallback:
        """Add this callback to ``trainer`` ahead of its ``report_to`` integrations (right after
        the Trainer's flow callback), so that they log the energy keys too. Returns self."""
        handler = trainer.callback_handler
        if self in handler.callbacks:
            handler.remove_callback(self)
        first = handler.callbacks[:1]
        index = 1 if first and isinstance(first[0], DefaultFlowCallback) else 0
        handler.callbacks.insert(index, self)
        self._attached = True
        return self

    # -- setup ----------------------------------------------------------------------------------

    def _ensure(self, args: TrainingArguments) -> None:
        if self._ready:
            return
        self._ready = True
        ranks = Ranks(args.process_index, args.local_process_index, args.world_size)
        self.windows.setup(ranks)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._ensure(args)
        self.epochs = []
        self._pending = {}
        self._total_energy_j = 0.0
        self._total_co2e_g = None
        self.totals = self.local_totals = None
        if args.report_to and not self._attached and not self._warned_order:
            self._warned_order = True
            log.warning(
                "meter: EnergyCallback was added after the report_to integrations (%s), which "
                "therefore log without the energy keys; add it with "
                "EnergyCallback(...).attach(trainer) instead of callbacks=[...]",
                ", ".join(map(str, args.report_to)),
            )
        self.windows.open("train")
        self.windows.open("interval")
        if getattr(args, "eval_on_start", False):
            self.windows.open("evaluation")

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.windows.open("epoch")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The Trainer sets state.epoch to a whole number after an epoch's last step: close the
        # epoch here, so that its figures go out with this step's log.
        if state.epoch is not None and state.epoch > 0 and state.epoch == int(state.epoch):
            self._end_epoch(args, state, control)
        # The flow callback, which runs before this one, has decided whether to evaluate now.
        if control.should_evaluate:
            self.windows.open("evaluation")

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.windows.is_open("epoch"):  # it ended early (max_steps, should_epoch_stop)
            self._end_epoch(args, state, control)
        if control.should_evaluate:
            self.windows.open("evaluation")

    def _end_epoch(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl
    ) -> None:
        # Every rank gets here at the same step (global_step and epoch are the same on all).
        m = self.windows.gather(self.windows.close("epoch"))
        if m is None:
            return
        self.epochs.append(m)
        self._pending.update(_figures("epoch_", m))
        epoch = len(self.epochs) - 1 if state.epoch is None else math.ceil(state.epoch) - 1
        self._say(state, f"energy: epoch {epoch}: {describe(m)}")
        strategy = getattr(args.logging_strategy, "value", args.logging_strategy)
        if self.log_epochs and str(strategy) != "no":
            control.should_log = True

    # -- logs -----------------------------------------------------------------------------------

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None:
            return
        added: dict[str, float] = {}
        # Only the Trainer's own logs, which every rank writes at the same point, gather.
        prefix = _eval_prefix(logs)
        if prefix is not None:
            m = self._close_evaluation()
            if m is not None:
                added.update(_figures(f"{prefix}_", m))
        elif _is_summary(logs):
            added.update(self._close_training())
        elif _is_step(logs):
            m = self.windows.gather(self.windows.close("interval"))
            self.windows.open("interval")
            if m is not None:
                self._total_energy_j += m.energy_j
                if m.co2e_g is not None:
                    self._total_co2e_g = (self._total_co2e_g or 0.0) + m.co2e_g
                added.update(_figures("", m))
                added["energy_total_j"] = self._total_energy_j
                if self._total_co2e_g is not None:
                    added["co2e_total_g"] = self._total_co2e_g
        added.update(self._pending)
        self._pending = {}
        if not added:
            return
        logs.update(added)
        # Trainer.log appends a copy of the logs to the history before calling the callbacks.
        history = state.log_history
        last = history[-1] if history else {}
        if last.get("step") == state.global_step and set(logs) - set(added) <= set(last):
            last.update(added)

    def _close_evaluation(self) -> Measurement | None:
        m = self.windows.gather(self.windows.close("evaluation"))
        if m is not None:
            self.evaluations.append(m)
        return m

    def _close_training(self) -> dict[str, float]:
        if not self.windows.is_open("train"):
            return {}
        self.windows.close("interval")
        self.local_totals = self.windows.close("train")
        self.totals = self.windows.gather(self.local_totals)
        if self.totals is None:
            return {}
        out = _figures("train_", self.totals)
        if self.totals.co2e_market_g is not None:
            out["train_co2e_market_g"] = self.totals.co2e_market_g
        if self.totals.embodied_co2e_g is not None:
            out["train_embodied_co2e_g"] = self.totals.embodied_co2e_g
        return out

    # -- evaluation and prediction --------------------------------------------------------------

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # trainer.evaluate() or predict() outside training: no event comes before the first
        # batch, so the window starts after it.
        if not self.windows.is_open("evaluation"):
            self._ensure(args)
            self.windows.open("evaluation")

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Normally closed by the evaluation's log; this covers logs it did not recognise.
        if self.windows.is_open("evaluation"):
            self._add_to_metrics(kwargs.get("metrics"))

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.windows.is_open("evaluation"):
            self._add_to_metrics(metrics)

    def _add_to_metrics(self, metrics: dict[str, float] | None) -> None:
        m = self._close_evaluation()
        if m is None or metrics is None:
            return
        prefix = _eval_prefix(metrics) or "eval"
        metrics.update(_figures(f"{prefix}_", m))

    # -- the end --------------------------------------------------------------------------------

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.windows.is_open("train"):  # the Trainer's final log did not come
            self._close_training()
        self.windows.close("epoch")
        self.windows.close("interval")
        if self.totals is not None:
            ranks = self.totals.extra.get("world_size")
            over = f" over {ranks} ranks" if ranks else ""
            self._say(state, f"energy: training{over}: {describe(self.totals)}")
        hint = run_report_hint()  # under `meter run --output F`: F gets the windows too
        if hint is not None:
            self._say(state, hint)

    def _say(self, state: TrainerState, line: str) -> None:
        if self.verbose and state.is_world_process_zero:
            print(line, flush=True)
