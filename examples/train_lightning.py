"""Lightning training, metered by `meter.integrations.lightning.EnergyCallback`. CPU, no downloads.

    python examples/train_lightning.py                          # this machine's devices
    METER_SIMULATE_GPUS=300 python examples/train_lightning.py  # plus a simulated 300 W GPU
    torchrun --nproc-per-node 2 examples/train_lightning.py --devices 2   # DDP, one total

Trains a small MLP classifier on a synthetic data set (Gaussian blobs). The callback prints
each epoch's energy and CO2e, logs them through the trainer's logger (a CSV file here), and
prints the totals at the end; under DDP the figures are summed over the ranks.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from meter.integrations.lightning import EnergyCallback
from torch import nn


class Classifier(pl.LightningModule):
    def __init__(self, dims: int, classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dims, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, classes),
        )  # fmt: skip

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        accuracy = (self.net(x).argmax(dim=1) == y).float().mean()
        self.log("val_accuracy", accuracy, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def blobs(n: int, dims: int, classes: int, seed: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=torch.Generator().manual_seed(0)) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, dims, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=1, help="processes (DDP when more than 1)")
    ap.add_argument("--log-dir", default=None, help="where the CSV logger writes (a temp dir)")
    args = ap.parse_args()

    torch.manual_seed(0)
    dims, classes = 32, 8
    train = torch.utils.data.DataLoader(blobs(args.samples, dims, classes, 1), batch_size=64)
    val = torch.utils.data.DataLoader(blobs(args.samples // 5, dims, classes, 2), batch_size=256)

    energy = EnergyCallback(log_every_n_steps=100)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="meter-lightning-")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        callbacks=[energy],
        logger=CSVLogger(log_dir, name="train_lightning"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Classifier(dims, classes), train, val)

    if trainer.is_global_zero:
        print()
        for i, epoch in enumerate(energy.epochs):
            co2e = f"{epoch.co2e_g * 1000:.3f} mg CO2e" if epoch.co2e_g is not None else "-"
            print(f"epoch {i}: {epoch.energy_j:9.1f} J  {co2e}")
        fit = energy.totals.get("fit")
        if fit is not None:
            for key, device in fit.devices.items():
                print(f"  {key}: {device.energy_j:.1f} J ({device.method})")
        print(f"metrics logged to {trainer.logger.log_dir}/metrics.csv" if trainer.logger else "")


if __name__ == "__main__":
    main()
