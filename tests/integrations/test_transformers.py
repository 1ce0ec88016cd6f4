"""The Transformers callback with a real Trainer on a tiny model built from a config (no
downloads), on CPU, metered on simulated GPUs."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from meter.integrations.transformers import EnergyCallback
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from meter import Meter

STEP_S = 0.01
ENERGY_KEYS = {"energy_j", "co2e_g", "power_w", "energy_total_j", "co2e_total_g"}


class Tokens(torch.utils.data.Dataset[dict[str, Any]]):
    """Random token sequences, the labels being the inputs (causal LM)."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, 16), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def slow(module: Any, inputs: Any) -> None:
    """A forward pre-hook: every forward pass takes a measurable time."""
    time.sleep(STEP_S)


def tiny_model() -> Any:
    """A tiny GPT-2 built from a config (nothing downloaded)."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    model.register_forward_pre_hook(slow)
    return model


class Capture(TrainerCallback):
    """Records the logs it is given, as a report_to integration would."""

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        self.logs.append(dict(logs))


def make_trainer(tmp_path: Path, callbacks: list[Any] | None = None, **options: Any) -> Any:
    options.setdefault("num_train_epochs", 2)
    options.setdefault("logging_steps", 2)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        **options,
    )
    return Trainer(
        model=tiny_model(),
        args=args,
        train_dataset=Tokens(20),  # 5 steps an epoch
        eval_dataset=Tokens(8),
        callbacks=callbacks,
    )


def test_energy_reaches_the_logs_the_history_and_reporters(
    tmp_path: Path, meter_factory: Callable[..., Meter], capsys: pytest.CaptureFixture[str]
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    trainer = make_trainer(tmp_path, eval_strategy="epoch")
    reporter = Capture()  # where the Trainer puts report_to integrations: before user callbacks
    trainer.callback_handler.callbacks.insert(1, reporter)
    energy = EnergyCallback(m).attach(trainer)
    names = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert names.index("EnergyCallback") < names.index("Capture")
    trainer.train()

    history = trainer.state.log_history
    steps = [h for h in history if "loss" in h]
    # every 2 steps of 10, plus the end of each epoch (5 and 10)
    assert [h["step"] for h in steps] == [2, 4, 5, 6, 8, 10]
    for h in steps:
        assert set(h) >= ENERGY_KEYS
        assert h["power_w"] == pytest.approx(300.0, rel=0.03)
    assert [h["energy_total_j"] for h in steps] == pytest.approx(
        [sum(s["energy_j"] for s in steps[: i + 1]) for i in range(len(steps))]
    )
    # epochs: logged at their end, equal to the callback's measurements
    epochs = [h for h in history if "epoch_energy_j" in h]
    assert [h["step"] for h in epochs] == [5, 10]
    assert len(energy.epochs) == 2
    for h, e in zip(epochs, energy.epochs, strict=True):
        assert h["epoch_energy_j"] == e.energy_j and h["epoch_co2e_g"] == e.co2e_g
        assert e.duration_s > 5 * STEP_S
        assert e.energy_j == pytest.approx(300.0 * e.duration_s, rel=0.03)
        assert set(e.devices) == {"gpu:0"} and e.devices["gpu:0"].method == "simulated"
    # evaluations
    evals = [h for h in history if "eval_loss" in h]
    assert [h["eval_energy_j"] for h in evals] == [e.energy_j for e in energy.evaluations]
    for e in energy.evaluations:
        assert e.duration_s > 2 * STEP_S
        assert e.energy_j == pytest.approx(300.0 * e.duration_s, rel=0.03)
    # the whole run
    total = energy.totals
    assert total is not None and total is energy.local_totals
    assert history[-1]["train_energy_j"] == total.energy_j
    assert history[-1]["train_co2e_g"] == total.co2e_g
    assert total.energy_j == pytest.approx(300.0 * total.duration_s, rel=0.03)
    assert total.energy_j >= sum(e.energy_j for e in energy.epochs)
    # the reporter saw exactly what the history holds
    assert [{k: v for k, v in h.items() if k != "step"} for h in history] == reporter.logs

    out = capsys.readouterr().out
    assert "energy: epoch 0:" in out and "energy: epoch 1:" in out
    assert "energy: training:" in out and "g CO2e" in out


def test_under_meter_run_output_training_ends_with_how_to_make_the_report(
    tmp_path: Path,
    meter_factory: Callable[..., Meter],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    make_trainer(tmp_path, callbacks=[EnergyCallback(m)], num_train_epochs=1).train()
    assert "meter report" not in capsys.readouterr().out  # not under meter run --output

    out = tmp_path / "runs.jsonl"
    monkeypatch.setenv("METER_RUN_OUTPUT", str(out))  # as meter run --output sets it
    make_trainer(tmp_path, callbacks=[EnergyCallback(m)], num_train_epochs=1).train()
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == f"meter: report (once `meter run` has ended): meter report {out} -o report.html"


def test_passed_with_callbacks_the_history_still_gets_energy(
    tmp_path: Path, meter_factory: Callable[..., Meter], caplog: pytest.LogCaptureFixture
) -> None:
    m = meter_factory(150.0, interval_s=0.01)
    energy = EnergyCallback(m, verbose=False, log_epochs=False)
    after = Capture()
    trainer = make_trainer(tmp_path, callbacks=[energy, after], num_train_epochs=1)
    trainer.args.report_to = ["some_integration"]  # as if one were installed and chosen
    with caplog.at_level(logging.WARNING, logger="meter"):
        trainer.train()
    assert "attach(trainer)" in caplog.text
    history = trainer.state.log_history
    assert [h["step"] for h in history if "loss" in h] == [2, 4]  # no extra epoch log
    assert all(set(h) >= ENERGY_KEYS for h in history if "loss" in h)
    assert "epoch_energy_j" in history[-1]  # the pending epoch figures ride on the last log
    assert energy.totals is not None
    assert history[-1]["train_energy_j"] == pytest.approx(150.0 * energy.totals.duration_s, 0.03)
    assert all("train_energy_j" in log or "energy_j" in log for log in after.logs)


def test_evaluate_and_predict_return_their_energy(
    tmp_path: Path, meter_factory: Callable[..., Meter]
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    energy = EnergyCallback(m, verbose=False)
    trainer = make_trainer(tmp_path, callbacks=[energy])
    metrics = trainer.evaluate()
    assert metrics["eval_energy_j"] == energy.evaluations[-1].energy_j > 0
    assert metrics["eval_power_w"] == pytest.approx(300.0, rel=0.03)
    assert "eval_co2e_g" in metrics
    predicted = trainer.predict(Tokens(8))
    assert predicted.metrics["test_energy_j"] == energy.evaluations[-1].energy_j > 0
    assert len(energy.evaluations) == 2


def test_metering_failures_do_not_stop_training(
    tmp_path: Path, meter_factory: Callable[..., Meter], caplog: pytest.LogCaptureFixture
) -> None:
    m = meter_factory(300.0, interval_s=0.01)
    m.close()
    energy = EnergyCallback(m, verbose=False)
    trainer = make_trainer(tmp_path, callbacks=[energy], num_train_epochs=1)
    trainer.train()
    assert trainer.state.global_step == 5
    assert energy.totals is None and energy.epochs == []
    assert "could not open window" in caplog.text
    assert not any("energy_j" in h for h in trainer.state.log_history)


# -- two ranks (gloo on CPU), like torchrun ------------------------------------------------------

DDP_SCRIPT = """
import json, sys, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from meter.integrations.transformers import EnergyCallback

class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        ids = torch.arange(16) % 64
        return {"input_ids": ids, "labels": ids}

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16))
model.register_forward_pre_hook(lambda module, inputs: time.sleep(0.02))
args = TrainingArguments(
    output_dir="out", use_cpu=True, per_device_train_batch_size=4, num_train_epochs=2,
    logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, ddp_backend="gloo",
)
trainer = Trainer(model=model, args=args, train_dataset=Tokens())
energy = EnergyCallback().attach(trainer)
trainer.train()
json.dump({
    "world_size": args.world_size,
    "devices": [d.key for d in energy.meter.devices],
    "totals": energy.totals.to_dict(),
    "local": energy.local_totals.to_dict(),
    "epochs": [e.energy_j for e in energy.epochs],
    "history": trainer.state.log_history,
}, open(sys.argv[1], "w"))
torch.distributed.barrier()  # no rank leaves gloo before the others are done
torch.distributed.destroy_process_group()
"""


def test_ddp_ranks_sum_to_one_total(run_ranks: Callable[..., list[Any]]) -> None:
    r0, r1 = run_ranks(DDP_SCRIPT, env={"METER_SIMULATE_GPUS": "300,150"})
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["devices"][0] == "gpu:0" and r1["devices"] == ["gpu:1"]
    own = r0["local"]["energy_j"] + r1["local"]["energy_j"]
    for r in (r0, r1):
        assert r["totals"]["energy_j"] == pytest.approx(own, rel=1e-12)
        assert r["history"][-1]["train_energy_j"] == pytest.approx(own, rel=1e-12)
    assert r0["epochs"] == r1["epochs"] and len(r0["epochs"]) == 2
    gpu1 = r1["local"]["devices"]["gpu:1"]
    assert gpu1["energy_j"] == pytest.approx(150.0 * r1["local"]["duration_s"], rel=0.03)
    # every step log carries the job's figures: the same on both ranks
    steps = [[h["energy_j"] for h in r["history"] if "energy_j" in h] for r in (r0, r1)]
    assert len(steps[0]) == 4 and steps[0] == steps[1]
    assert sum(steps[0]) < r0["totals"]["energy_j"]
    assert "energy: training over 2 ranks:" in r0["output"]
    assert "energy: training" not in r1["output"]
