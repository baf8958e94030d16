"""Parity plots and learning curves as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def parity_plot(predictions: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Predicted against reference energy per atom (eV/atom) and force components (eV/Å).

    Args:
        predictions: ``energy_pred``, ``energy_ref`` [num_frames] (per atom) and ``forces_pred``,
            ``forces_ref`` [3 * num_atoms], as gathered by :func:`gnnpot.training.evaluate.predict`.
        path: the PNG to write.
        title: prefix of the figure title (e.g. the split).
    """
    plt = _pyplot()
    panels = [
        ("energy", "energy per atom", "eV/atom", "meV/atom"),
        ("forces", "force components", "eV/Å", "meV/Å"),
    ]
    panels = [p for p in panels if len(predictions.get(f"{p[0]}_ref", [])) > 0]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 4.6), squeeze=False)
    for ax, (key, label, unit, mev_unit) in zip(axes[0], panels):
        ref, pred = np.asarray(predictions[f"{key}_ref"]), np.asarray(predictions[f"{key}_pred"])
        mae = float(np.abs(pred - ref).mean()) * 1000.0
        low, high = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", lw=1, zorder=0)
        ax.scatter(ref, pred, s=4, alpha=0.5, lw=0)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {label} ({unit})")
        ax.set_ylabel(f"predicted {label} ({unit})")
        ax.set_title(f"{title}\n{label}: MAE {mae:.3g} {mev_unit}".strip(), fontsize=10)
        ax.locator_params(nbins=5)  # long tick labels (e.g. -467.74 eV/atom) must not overlap
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(epoch, value), ...]}`` from a Lightning ``metrics.csv`` (last value per epoch)."""
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch")
            if epoch in (None, ""):
                continue
            for name, value in row.items():
                if name in ("epoch", "step") or value in (None, ""):
                    continue
                number = float(value)
                if math.isfinite(number):
                    series.setdefault(name, {})[int(float(epoch))] = number
    return {name: sorted(values.items()) for name, values in series.items()}


def learning_curves(metrics_csv: str | Path, path: str | Path) -> Path | None:
    """Loss, force MAE and energy-per-atom MAE against epoch, train and validation; ``None`` if nothing to plot."""
    series = read_metrics_csv(metrics_csv)
    panels = [
        ("loss", "loss", True),
        ("forces_mae", "force MAE (meV/Å)", True),
        ("energy_per_atom_mae", "energy MAE (meV/atom)", True),
    ]
    panels = [p for p in panels if any(f"{stage}/{p[0]}" in series for stage in ("train", "val"))]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (name, label, log) in zip(axes[0], panels):
        for stage, label_ in (("train", "train (during the epoch)"), ("val", "val (end of epoch)")):
            points = series.get(f"{stage}/{name}")
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o" if len(points) < 30 else None, ms=3, label=label_)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
