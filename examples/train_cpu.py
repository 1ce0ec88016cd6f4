"""A real CPU training loop, metered per epoch. Needs nothing but meter (no GPU, no numpy).

    python examples/train_cpu.py                 # per-epoch energy from inside the script
    meter run -- python examples/train_cpu.py    # plus a whole-run summary and JSONL record

Trains a logistic-regression classifier with mini-batch SGD on a synthetic, linearly
separable data set, in pure Python. Each epoch is a `meter.measure` window; the figures say how
they were obtained (``counter`` for RAPL/NVML, ``estimated`` when RAPL is unreadable,
``simulated`` with METER_SIMULATE_GPUS).
"""

from __future__ import annotations

import argparse
import math
import random

import meter


def make_data(n: int, dims: int, seed: int) -> tuple[list[list[float]], list[int]]:
    rng = random.Random(seed)
    true_w = [rng.gauss(0, 1) for _ in range(dims)]
    xs, ys = [], []
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in range(dims)]
        ys.append(1 if sum(a * b for a, b in zip(x, true_w, strict=True)) > 0 else 0)
        xs.append(x)
    return xs, ys


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


def train_epoch(
    w: list[float], xs: list[list[float]], ys: list[int], lr: float, batch: int
) -> float:
    order = list(range(len(xs)))
    random.shuffle(order)
    loss = 0.0
    for start in range(0, len(order), batch):
        grad = [0.0] * len(w)
        for i in order[start : start + batch]:
            x, y = xs[i], ys[i]
            p = sigmoid(sum(a * b for a, b in zip(w, x, strict=True)))
            loss -= math.log(p + 1e-12) if y else math.log(1 - p + 1e-12)
            for j, xj in enumerate(x):
                grad[j] += (p - y) * xj
        for j in range(len(w)):
            w[j] -= lr * grad[j] / batch
    return loss / len(xs)


def accuracy(w: list[float], xs: list[list[float]], ys: list[int]) -> float:
    hits = sum(
        (sum(a * b for a, b in zip(w, x, strict=True)) > 0) == bool(y)
        for x, y in zip(xs, ys, strict=True)
    )
    return hits / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=30000)
    ap.add_argument("--dims", type=int, default=48)
    args = ap.parse_args()

    xs, ys = make_data(args.samples, args.dims, seed=1)
    w = [0.0] * args.dims
    random.seed(2)
    total = 0.0
    for epoch in range(1, args.epochs + 1):
        with meter.measure("epoch") as window:
            loss = train_epoch(w, xs, ys, lr=0.5, batch=32)
        m = window.result
        assert m is not None
        total += m.energy_j
        parts = ", ".join(f"{k} {d.energy_j:.1f} J ({d.method})" for k, d in m.devices.items())
        co2e = f", {m.co2e_g * 1000:.2f} mg CO2e ({m.carbon['zone']})" if m.carbon else ""
        print(
            f"epoch {epoch}: loss {loss:.4f}, accuracy {accuracy(w, xs, ys):.3f}, "
            f"{m.duration_s:.2f} s, {m.energy_j:.1f} J{co2e} [{parts}]"
        )
    print(f"training energy: {total:.1f} J over {args.epochs} epochs")


if __name__ == "__main__":
    main()
