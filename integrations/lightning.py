"""Lightning: a callback that meters fit, validate, test and predict, and logs energy and CO2e.

    >>> import lightning.pytorch as pl
    >>> from meter.integrations.lightning import EnergyCallback
    >>> energy = EnergyCallback(log_every_n_steps=50)
    >>> trainer = pl.Trainer(max_epochs=3, callbacks=[energy])   # doctest: +SKIP
    >>> trainer.fit(model, data)                                 # doctest: +SKIP
    >>> energy.totals["fit"].energy_j, energy.epochs[0].co2e_g   # doctest: +SKIP

What it sends to the trainer's loggers (on global rank 0; the figures are job totals, summed
over the ranks under DDP):

==========================  =================================================================
``energy/epoch_j``          a training epoch (with the validation run at its end)
``energy/epoch_co2e_g``     its location-based CO2e (``_co2e_market_g`` when market-based is set)
``power/epoch_avg_w``       its average power
``energy/steps_j``          every ``log_every_n_steps`` optimizer steps: energy since the last
``energy/steps_co2e_g``     ... its CO2e,
``power/avg_w``             ... its average power,
``energy/total_j``          ... and energy and CO2e since the fit started
``energy/total_co2e_g``
``energy/val_epoch_j``      a validation epoch (and ``energy/val_epoch_co2e_g``,
                            ``power/val_epoch_avg_w``)
``energy/fit_j``, ...       the whole fit at its end (``energy/fit_co2e_g``, ``power/fit_avg_w``);
                            likewise ``validate``, ``test`` and ``predict`` for those stages
==========================  =================================================================

Under DDP each rank meters its own GPU and local rank 0 the host's CPU and DRAM (see
`meter.ranks`), and the callback sums the ranks over ``torch.distributed``, so no device is
counted twice and the logged figures are the job's. Metering never breaks training: a failure
is logged and the run goes on unmetered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meter.integrations.distributed import RankWindows, describe

from meter import Measurement, Meter
from meter.core import run_report_hint
from meter.ranks import Ranks

if TYPE_CHECKING:
    from lightning.pytorch import Callback, LightningModule, Trainer
else:
    try:
        from lightning.pytorch import Callback, LightningModule, Trainer
    except ImportError:
        try:  # the standalone package, for projects that still use it
            from pytorch_lightning import Callback, LightningModule, Trainer
        except ImportError as error:
            raise ImportError(
                "meter.integrations.lightning needs Lightning, which is not installed: "
                "pip install 'ai-energy-meter[lightning]'"
            ) from error

__all__ = ["EnergyCallback"]

log = logging.getLogger("meter")

#: The stages of a Lightning run, by the trainer function that runs them.
_STAGES = ("fit", "validate", "test", "predict")


def _metrics(prefix: str, m: Measurement, *, power: str) -> dict[str, float]:
    """Logger metrics for one measurement: ``{prefix}_j``, ``{prefix}_co2e_g`` and the power."""
    out = {f"energy/{prefix}_j": m.energy_j, power: m.avg_power_w}
    if m.co2e_g is not None:
        out[f"energy/{prefix}_co2e_g"] = m.co2e_g
    if m.co2e_market_g is not None:
        out[f"energy/{prefix}_co2e_market_g"] = m.co2e_market_g
    return out


class EnergyCallback(Callback):
    """Meters a Lightning run and logs energy, power and CO2e through the trainer's loggers.

    ``meter``: the `meter.Meter` to use; by default the process default (`meter.get_meter`),
    or under a launcher that does not export ``LOCAL_RANK`` (``ddp_spawn``) one built for this
    rank. ``log_every_n_steps``: log the energy of the last N optimizer steps (default: the
    trainer's ``log_every_n_steps``; 0 turns it off). ``sync_cuda``: synchronise CUDA at the
    window boundaries (default: the meter's setting). ``gather``: sum the ranks over
    ``torch.distributed`` (True); with False each rank keeps its own figures. ``verbose``: print
    a line per epoch and the totals of each stage (on global rank 0).

    After a run: ``epochs`` and ``validation_epochs`` hold one `meter.Measurement` per epoch,
    ``totals`` one per stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``), all summed
    over the ranks; ``local_totals`` has this rank's own stage figures.
    """

    def __init__(
        self,
        meter: Meter | None = None,
        *,
        log_every_n_steps: int | None = None,
        sync_cuda: bool | None = None,
        gather: bool = True,
        verbose: bool = True,
    ) -> None:
        if log_every_n_steps is not None and log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps must be >= 0, got {log_every_n_steps}")
        self.log_every_n_steps = log_every_n_steps
        self.verbose = verbose
        self.windows = RankWindows(meter, sync_cuda=sync_cuda, gather=gather)
        self.epochs: list[Measurement] = []
        self.validation_epochs: list[Measurement] = []
        self.totals: dict[str, Measurement] = {}
        self.local_totals: dict[str, Measurement] = {}
        self._last_step = 0
        self._fit_energy_j = 0.0
        self._fit_co2e_g: float | None = None

    @property
    def meter(self) -> Meter | None:
        """The meter in use (None before ``setup``)."""
        return self.windows.meter

    # -- lifecycle ------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        ranks = Ranks(trainer.global_rank, trainer.local_rank, trainer.world_size)
        self.windows.setup(ranks)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.windows.teardown()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        # No gather here: the other ranks may be gone. Keep this rank's figures.
        closed = self.windows.close_all(type(exception))
        for stage in _STAGES:
            if stage in closed:
                self.local_totals[stage] = closed[stage]
                self._say(f"energy: {stage} (this rank, interrupted): {describe(closed[stage])}")

    # -- stages ---------------------------------------------------------------------------------

    def _start_stage(self, stage: str) -> None:
        self.windows.open(stage)

    def _end_stage(self, trainer: Trainer, stage: str) -> None:
        local = self.windows.close(stage)
        total = self.windows.gather(local)
        if local is not None:
            self.local_totals[stage] = local
        if total is None:
            return
        self.totals[stage] = total
        self._log(trainer, _metrics(stage, total, power=f"power/{stage}_avg_w"))
        ranks = total.extra.get("world_size")
        over = f" over {ranks} ranks" if ranks else ""
        self._say(f"energy: {stage}{over}: {describe(total)}", trainer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs = []
        self.validation_epochs = []
        self._last_step = trainer.global_step
        self._fit_energy_j = 0.0
        self._fit_co2e_g = None
        self._start_stage("fit")
        self.windows.open("steps")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.windows.close("steps")
        self._end_stage(trainer, "fit")
        hint = run_report_hint()  # under `meter run --output F`: F gets the windows too
        if hint is not None:
            self._say(hint, trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if _fn(trainer) == "validate":
            self._start_stage("validate")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.windows.is_open("validate"):
            self._end_stage(trainer, "validate")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_stage("test")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_stage(trainer, "test")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_stage("predict")

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end_stage(trainer, "predict")

    # -- epochs and steps -----------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.windows.open("epoch")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        m = self.windows.gather(self.windows.close("epoch"))
        if m is None:
            return
        self.epochs.append(m)
        out = _metrics("epoch", m, power="power/epoch_avg_w")
        self._log(trainer, {**out, "epoch": float(trainer.current_epoch)})
        self._say(f"energy: epoch {trainer.current_epoch}: {describe(m)}", trainer)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.windows.open("validation")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.windows.is_open("validation"):
            return
        m = self.windows.gather(self.windows.close("validation"))
        if m is None:
            return
        self.validation_epochs.append(m)
        out = _metrics("val_epoch", m, power="power/val_epoch_avg_w")
        self._log(trainer, {**out, "epoch": float(trainer.current_epoch)})

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        every = self.log_every_n_steps
        if every is None:  # the trainer's setting (an attribute its stubs do not declare)
            every = int(getattr(trainer, "log_every_n_steps", 50))
        # global_step is the same on every rank, so every rank gathers at the same steps.
        if not every or trainer.global_step - self._last_step < every:
            return
        self._last_step = trainer.global_step
        m = self.windows.gather(self.windows.close("steps"))
        self.windows.open("steps")
        if m is None:
            return
        self._fit_energy_j += m.energy_j
        if m.co2e_g is not None:
            self._fit_co2e_g = (self._fit_co2e_g or 0.0) + m.co2e_g
        out = {"energy/steps_j": m.energy_j, "power/avg_w": m.avg_power_w}
        if m.co2e_g is not None:
            out["energy/steps_co2e_g"] = m.co2e_g
        out["energy/total_j"] = self._fit_energy_j
        if self._fit_co2e_g is not None:
            out["energy/total_co2e_g"] = self._fit_co2e_g
        self._log(trainer, out)

    # -- output ---------------------------------------------------------------------------------

    def _log(self, trainer: Trainer, values: Mapping[str, float]) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            try:
                logger.log_metrics(dict(values), step=trainer.global_step)
            except Exception:
                log.warning("meter: logging energy to %r failed", logger, exc_info=True)

    def _say(self, line: str, trainer: Trainer | None = None) -> None:
        if self.verbose and (trainer is None or trainer.is_global_zero):
            print(line, flush=True)


def _fn(trainer: Trainer) -> str | None:
    fn = getattr(trainer.state, "fn", None)
    return None if fn is None else str(getattr(fn, "value", fn))
