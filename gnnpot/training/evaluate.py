"""Evaluate a trained potential on any dataset: metrics in meV and the predictions for parity plots.

A checkpoint is read with ``torch.load(weights_only=True)``: its hyperparameters are plain data
(see :class:`~gnnpot.training.PotentialModule`), so the model is rebuilt from them and its
weights loaded strictly, and no pickled object from the file is ever executed.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from gnnpot.data.atomic_data import AtomicData
from gnnpot.models import ForceField
from gnnpot.training.metrics import PotentialMetrics
from gnnpot.training.module import PotentialModule, _collect


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> PotentialModule:
    """A :class:`PotentialModule` from a Lightning checkpoint of a run, in eval mode.

    Raises:
        ValueError: the file is not a checkpoint of a gnnpot run.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0]
        raise ValueError(f"{path}: refused to load, it holds more than plain data and tensors ({reason})") from err
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a Lightning checkpoint with hyper_parameters and state_dict")
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    if "representation" not in hparams:
        raise ValueError(f"{path}: not a gnnpot checkpoint (no 'representation' hyperparameter)")
    module = PotentialModule(**hparams)
    if module.model is None:
        raise ValueError(f"{path}: the checkpoint's statistics are not resolved (was it saved before training?)")
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return module.eval()


def predict(
    model: ForceField, graphs: Iterable[AtomicData] | DataLoader, batch_size: int = 16
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics (meV, see :data:`~gnnpot.training.METRIC_UNITS`) and predictions of ``model`` on ``graphs``.

    Returns:
        ``(metrics, predictions)``; predictions hold ``energy_pred``/``energy_ref`` (eV/atom) and
        ``forces_pred``/``forces_ref`` (eV/Å components) of the labelled frames.
    """
    loader = graphs if isinstance(graphs, DataLoader) else DataLoader(list(graphs), batch_size=batch_size)
    metrics = PotentialMetrics(sync=False)  # may run on one process of several
    store: dict[str, list[np.ndarray]] = {}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            batch = batch.to(device)
            out = model(batch)
            metrics.update(out, batch)
            _collect(store, out, batch)
    finally:
        model.train(was_training)
    arrays = {key: np.concatenate(values) if values else np.zeros(0) for key, values in store.items()}
    return metrics.compute(), arrays


def describe(module: PotentialModule) -> dict[str, Any]:
    """Plain-data summary of a trained module: family, cutoff, elements, E0, scale, EMA."""
    hp = module.hparams
    return {
        "representation": hp.representation,
        "cutoff": hp.cutoff,
        "elements": list(hp.elements),
        "e0": dict(hp.e0),
        "scale": hp.scale,
        "ema": module.ema is not None,
    }


def split_entry(split_file: str | Path, subset: str) -> tuple[str, list[int]]:
    """The data file and frame indices of ``subset`` in a run's ``split.json``."""
    import json

    record = json.loads(Path(split_file).read_text())
    entry = record.get(subset)
    if not isinstance(entry, dict) or "file" not in entry:
        raise ValueError(f"{split_file}: no {subset!r} entry with a file and indices")
    return entry["file"], [int(k) for k in entry["indices"]]
