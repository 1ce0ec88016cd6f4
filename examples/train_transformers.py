"""Hugging Face Trainer, metered by `meter.integrations.transformers.EnergyCallback` (CPU).

    python examples/train_transformers.py                          # this machine's devices
    METER_SIMULATE_GPUS=300 python examples/train_transformers.py  # plus a simulated 300 W GPU
    torchrun --nproc-per-node 2 examples/train_transformers.py     # DDP (gloo), one total

Trains a tiny GPT-2, built from a config (no weights, no tokenizer), to continue synthetic
token sequences. The callback adds energy and CO2e to the Trainer's logs (so every
``report_to`` backend gets them), prints each epoch's energy and CO2e, and the totals.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally

import torch
from meter.integrations.transformers import EnergyCallback
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

VOCAB = 128
LENGTH = 32


class Sequences(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Arithmetic token sequences (start, step): learnable, so the loss goes down."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=g)
        step = torch.randint(1, 8, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--output-dir", default=None, help="the Trainer's output dir (a temp dir)")
    args = ap.parse_args()

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    training = TrainingArguments(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="meter-transformers-"),
        use_cpu=True,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=3e-3,
        logging_steps=10,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    trainer = Trainer(
        model=GPT2LMHeadModel(config),
        args=training,
        train_dataset=Sequences(args.samples, seed=1),
        eval_dataset=Sequences(args.samples // 4, seed=2),
    )
    energy = EnergyCallback().attach(trainer)  # ahead of the report_to integrations
    trainer.train()

    if trainer.is_world_process_zero():
        print()
        evaluations = [h for h in trainer.state.log_history if "eval_energy_j" in h]
        for i, epoch in enumerate(energy.epochs):
            co2e = f"{epoch.co2e_g * 1000:.3f} mg CO2e" if epoch.co2e_g is not None else "-"
            line = f"epoch {i}: {epoch.energy_j:9.1f} J  {co2e}"
            if i < len(evaluations):
                e = evaluations[i]
                line += f"  (eval: loss {e['eval_loss']:.3f}, {e['eval_energy_j']:.1f} J)"
            print(line)
        if energy.totals is not None:
            for key, device in energy.totals.devices.items():
                print(f"  {key}: {device.energy_j:.1f} J ({device.method})")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Wait for every rank before tearing gloo down: a rank that leaves first can leave
        # another hanging in its teardown.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
