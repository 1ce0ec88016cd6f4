"""The Lightning callback with a real Trainer on CPU, metered on simulated GPUs."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from meter.integrations.lightning import EnergyCallback

from meter import Meter

STEP_S = 0.01  # each batch sleeps this long, so that epochs last a measurable time
BATCHES = 6


class TinyModel(pl.LightningModule):
    def __init__(self, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.fail_at_step = fail_at_step

    def _loss(self, batch: Any) -> Any:
        x, y = batch
        time.sleep(STEP_S)
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.fail_at_step is not None and self.global_step >= self.fail_at_step:
            raise RuntimeError("boom")
        return self._loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self.layer(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(batches: int = BATCHES) -> Any:
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(batches * 4, 8, generator=g), torch.randn(batches * 4, 1, generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=4)


def trainer(tmp_path: Path, callback: EnergyCallback, **options: Any) -> Any:
    options.setdefault("max_epochs", 2)
    options.setdefault("log_every_n_steps", 2)
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=CSVLogger(tmp_path, name="logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
        **options,
    )


def logged(tmp_path: Path) -> list[dict[str, str]]:
    (path,) = tmp_path.glob("logs/*/metrics.csv")
    with path.open() as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name)]


def test_fit_logs_epochs_steps_and_totals(
    tmp_path: Path, meter_factory: Callable[..., Meter], capsys: pytest.CaptureFixture[str]
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    energy = EnergyCallback(m, log_every_n_steps=2)
    trainer(tmp_path, energy).fit(TinyModel(), loader(), loader(2))

    assert len(energy.epochs) == 2
    assert len(energy.validation_epochs) == 2  # the sanity check is not a validation epoch
    for epoch in [*energy.epochs, *energy.validation_epochs]:
        assert set(epoch.devices) == {"gpu:0"}
        assert epoch.devices["gpu:0"].method == "simulated"
        # (A validation epoch of a few tens of ms is shorter than a counter period or two:
        # approximate by nature, and more so on a loaded machine.)
        tolerance = 0.03 if epoch.duration_s >= 0.5 else 0.5
        assert epoch.energy_j == pytest.approx(300.0 * epoch.duration_s, rel=tolerance)
        assert epoch.co2e_g is not None and epoch.co2e_g > 0
    assert energy.epochs[0].duration_s > BATCHES * STEP_S
    fit = energy.totals["fit"]
    assert fit.energy_j == pytest.approx(300.0 * fit.duration_s, rel=0.03)
    assert fit.energy_j > sum(e.energy_j for e in energy.epochs)
    assert energy.local_totals["fit"] is fit  # one process: nothing to gather

    rows = logged(tmp_path)
    assert column(rows, "energy/epoch_j") == pytest.approx([e.energy_j for e in energy.epochs])
    assert column(rows, "energy/epoch_co2e_g") == pytest.approx([e.co2e_g for e in energy.epochs])
    assert column(rows, "power/epoch_avg_w") == pytest.approx([300.0, 300.0], rel=0.03)
    assert column(rows, "energy/val_epoch_j") == pytest.approx(
        [e.energy_j for e in energy.validation_epochs]
    )
    assert column(rows, "energy/fit_j") == pytest.approx([fit.energy_j])
    # every 2 of the 12 optimizer steps: energy since the last, and the running total
    steps = column(rows, "energy/steps_j")
    assert len(steps) == 6
    assert [int(r["step"]) for r in rows if r.get("energy/steps_j")] == [2, 4, 6, 8, 10, 12]
    assert column(rows, "energy/total_j") == pytest.approx(
        [sum(steps[: i + 1]) for i in range(len(steps))]
    )
    assert column(rows, "power/avg_w") == pytest.approx([300.0] * 6, rel=0.03)

    out = capsys.readouterr().out
    assert "energy: epoch 0:" in out and "energy: epoch 1:" in out and "energy: fit:" in out
    assert "g CO2e" in out


def test_under_meter_run_output_the_fit_ends_with_how_to_make_the_report(
    tmp_path: Path,
    meter_factory: Callable[..., Meter],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    trainer(tmp_path, EnergyCallback(m), max_epochs=1).fit(TinyModel(), loader())
    assert "meter report" not in capsys.readouterr().out  # not under meter run --output

    out = tmp_path / "runs.jsonl"
    monkeypatch.setenv("METER_RUN_OUTPUT", str(out))  # as meter run --output sets it
    trainer(tmp_path, EnergyCallback(m), max_epochs=1).fit(TinyModel(), loader())
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == f"meter: report (once `meter run` has ended): meter report {out} -o report.html"


def test_validate_test_and_predict_are_metered(
    tmp_path: Path, meter_factory: Callable[..., Meter]
) -> None:
    m = meter_factory(150.0, interval_s=0.01)
    energy = EnergyCallback(m, log_every_n_steps=0, verbose=False)
    t = trainer(tmp_path, energy, max_epochs=1)
    model = TinyModel()
    t.validate(model, loader(3))
    t.test(model, loader(3))
    t.predict(model, loader(3))
    assert set(energy.totals) == {"validate", "test", "predict"}
    for stage in ("validate", "test"):
        total = energy.totals[stage]
        assert total.duration_s > 3 * STEP_S
        assert total.energy_j == pytest.approx(150.0 * total.duration_s, rel=0.03)
    rows = logged(tmp_path)
    assert column(rows, "energy/test_j") == pytest.approx([energy.totals["test"].energy_j])
    assert column(rows, "energy/validate_j") == pytest.approx([energy.totals["validate"].energy_j])
    assert energy.epochs == []


def test_a_failing_fit_keeps_this_ranks_figures_and_raises_unchanged(
    tmp_path: Path, meter_factory: Callable[..., Meter]
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    energy = EnergyCallback(m, verbose=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, energy).fit(TinyModel(fail_at_step=3), loader())
    fit = energy.local_totals["fit"]
    assert fit.error == "RuntimeError"
    assert fit.energy_j == pytest.approx(300.0 * fit.duration_s, rel=0.03)


def test_metering_failures_do_not_stop_training(
    tmp_path: Path, meter_factory: Callable[..., Meter], caplog: pytest.LogCaptureFixture
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    m.close()  # every window on it now fails to open
    energy = EnergyCallback(m, verbose=False)
    t = trainer(tmp_path, energy, max_epochs=1)
    t.fit(TinyModel(), loader())
    assert t.global_step == BATCHES
    assert energy.epochs == [] and energy.totals == {}
    assert "could not open window" in caplog.text


# -- DDP: two ranks, like torchrun ----------------------------------------------------------------

DDP_SCRIPT = """
import json, sys, time
import torch
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from meter.integrations.lightning import EnergyCallback

class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        return self.layer(batch[0]).pow(2).mean()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

data = torch.utils.data.TensorDataset(torch.randn(32, 4))
energy = EnergyCallback(log_every_n_steps=2)
trainer = pl.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, callbacks=[energy],
    logger=CSVLogger("logs", name="ddp"), enable_progress_bar=False,
    enable_model_summary=False, enable_checkpointing=False,
)
trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=4))
rows = []
if trainer.is_global_zero:
    import csv, glob
    rows = list(csv.DictReader(open(glob.glob("logs/ddp/*/metrics.csv")[0])))
json.dump({
    "devices": [d.key for d in energy.meter.devices] if energy.meter else [],
    "fit": energy.totals["fit"].to_dict(),
    "local": energy.local_totals["fit"].to_dict(),
    "epochs": [e.to_dict() for e in energy.epochs],
    "rows": rows,
}, open(sys.argv[1], "w"))
"""


def test_ddp_each_rank_meters_its_own_devices_and_the_total_is_their_sum(
    run_ranks: Callable[..., list[Any]],
) -> None:
    r0, r1 = run_ranks(DDP_SCRIPT, env={"METER_SIMULATE_GPUS": "300,150"})
    assert r0["devices"][0] == "gpu:0" and len(r0["devices"]) > 1  # its GPU and the host
    assert r1["devices"] == ["gpu:1"]
    own = r0["local"]["energy_j"] + r1["local"]["energy_j"]
    for r in (r0, r1):
        assert r["fit"]["energy_j"] == pytest.approx(own, rel=1e-12)
        assert r["fit"]["world_size"] == 2
        assert sorted(k for k in r["fit"]["devices"] if "gpu" in k) == [
            "rank0/gpu:0",
            "rank1/gpu:1",
        ]
    assert [e["energy_j"] for e in r0["epochs"]] == [e["energy_j"] for e in r1["epochs"]]
    gpu1 = r1["local"]["devices"]["gpu:1"]
    assert gpu1["energy_j"] == pytest.approx(150.0 * r1["local"]["duration_s"], rel=0.03)
    # rank 0 logs the job's figures, once
    rows = r0["rows"]
    assert column(rows, "energy/epoch_j") == pytest.approx([e["energy_j"] for e in r0["epochs"]])
    assert column(rows, "energy/fit_j") == pytest.approx([r0["fit"]["energy_j"]])
    assert "energy: fit over 2 ranks:" in r0["output"]
    assert "energy: fit" not in r1["output"]
