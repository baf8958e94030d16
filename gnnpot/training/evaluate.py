"""Evaluate a trained potential on a dataset, and export a training run as a model file.

Metrics are in meV, predictions feed the parity plots; the model file carries the run's recipe and
test metrics.

Models are read with :func:`gnnpot.models.load_model` (``torch.load(weights_only=True)``, then a
strict rebuild from the config), so no pickled object from a file is ever executed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from gnnpot.calculators.predict import batches
from gnnpot.data.atomic_data import AtomicData
from gnnpot.data.io import DB_NAN_NOTE, Frames, frame_labels, read_frames
from gnnpot.keys import LABEL_KEYS, STRESS
from gnnpot.models import ForceField, load_model, read_metadata, save_model
from gnnpot.training.metrics import PotentialMetrics
from gnnpot.training.module import _collect


def predict(
    model: ForceField, graphs: Iterable[AtomicData] | DataLoader, batch_size: int = 16
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics (meV, see :data:`~gnnpot.training.METRIC_UNITS`) and predictions of ``model`` on ``graphs``.

    Returns:
        ``(metrics, predictions)``; predictions hold ``energy_pred``/``energy_ref`` (eV/atom) and
        ``forces_pred``/``forces_ref`` (eV/Å components) of the labelled frames.
    """
    loader = graphs if isinstance(graphs, DataLoader) else DataLoader(list(graphs), batch_size=batch_size)
    device = next(model.parameters()).device
    return _score(model, ((batch, model(batch)) for batch in (b.to(device) for b in loader)))


def _score(
    model: ForceField, evaluated: Iterable[tuple[Batch, dict[str, Tensor]]]
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics and predictions over ``(labelled batch, model outputs)`` pairs, the model in eval mode."""
    metrics = PotentialMetrics(sync=False)  # may run on one process of several
    store: dict[str, list[np.ndarray]] = {}
    was_training = model.training
    model.eval()
    try:
        for batch, out in evaluated:
            metrics.update(out, batch)
            _collect(store, out, batch)
    finally:
        model.train(was_training)
    arrays = {key: np.concatenate(values) if values else np.zeros(0) for key, values in store.items()}
    return metrics.compute(), arrays


def split_entry(split_file: str | Path, subset: str) -> tuple[str, list[int]]:
    """The data file and frame indices of ``subset`` in a run's ``split.json``."""
    record = json.loads(Path(split_file).read_text())
    entry = record.get(subset)
    if not isinstance(entry, dict) or "file" not in entry:
        raise ValueError(f"{split_file}: no {subset!r} entry with a file and indices")
    return entry["file"], [int(k) for k in entry["indices"]]


def evaluate_file(
    model: ForceField,
    path: str | Path,
    indices: list[int] | None = None,
    index: str = ":",
    key_map: dict[str, str] | None = None,
    batch_size: int = 16,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics and predictions of ``model`` on the frames of a labelled file.

    Returns:
        ``(summary, predictions)``; the summary holds ``data``, ``num_frames``, ``num_atoms``,
        ``seconds``, ``metrics`` (meV units) and ``left_out`` (see :func:`left_out`).

    Raises:
        ValueError: no frames, or an element the model does not know (naming file and frame).
    """
    import time

    frames = read_frames(path, index=index, key_map=key_map, require=())
    if indices is not None:
        frames = frames.select(indices)
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to evaluate")
    check_elements(frames, model.elements)
    start = time.perf_counter()
    # gnnpot.predict's loop: one batch of graphs at a time, so memory does not grow with the file
    evaluated = batches(frames, model, batch_size, labelled=True, source=frames.source, frame_ids=frames.frame_ids)
    metrics, predictions = _score(model, ((batch, out) for _, batch, out in evaluated))
    summary = {
        "data": str(path),
        "num_frames": len(frames),
        "num_atoms": sum(len(atoms) for atoms in frames),
        "seconds": time.perf_counter() - start,
        "metrics": metrics,
        "left_out": left_out(frames),
    }
    return summary, predictions


def check_elements(frames: Frames, elements: Iterable[int]) -> None:
    """Raise ``ValueError`` naming the file, the first frame and the elements a model does not know."""
    known = set(elements)
    for position, atoms in enumerate(frames):
        unknown = sorted(set(atoms.numbers.tolist()) - known)
        if unknown:
            names = [chemical_symbols[z] for z in unknown]
            raise ValueError(
                f"{frames.where(position)}: element(s) {names} unknown to the model, which knows "
                f"{[chemical_symbols[z] for z in sorted(known)]}"
            )


def left_out(frames: Frames, examples: int = 3) -> dict[str, dict[str, Any]]:
    """The frames and atoms each metric leaves out, and why: a frame without the label.

    Stress is only looked for in periodic frames; molecules are not counted as left out of it.
    The per-atom energy metric leaves out the frames of ``energy``.

    Returns:
        ``{quantity: {"frames": n, "atoms": n, "why": text, "examples": ["file, frame k", ...]}}``
        for each quantity that leaves out at least one frame.
    """
    report: dict[str, dict[str, Any]] = {}
    for name in LABEL_KEYS:
        missing = [
            position
            for position, atoms in enumerate(frames)
            if name not in frame_labels(atoms) and (name != STRESS or atoms.pbc.all())
        ]
        if not missing:
            continue
        why = f"no {name} label"
        if str(frames.source).endswith(".db"):
            why += f" ({DB_NAN_NOTE})"
        report[name] = {
            "frames": len(missing),
            "atoms": sum(len(frames[k]) for k in missing),
            "why": why,
            "examples": [frames.where(k) for k in missing[:examples]],
        }
    return report


def export_model(
    source: str | Path, out: str | Path, test_data: str | Path | None = None, evaluate: bool = True
) -> tuple[Path, dict[str, Any]]:
    """Write the model of a training run (EMA weights when present) as a model file.

    Args:
        source: a run folder or one of its checkpoints (``RUN/checkpoints/best.ckpt`` by default).
        out: the model file to write.
        test_data: labelled file to measure the test metrics on; default: the ``test`` entry of
            the run's ``split.json`` when it has one.
        evaluate: measure test metrics at all.

    The metadata gains the run's ``config.yaml`` (``recipe``), the training-data hash and the test
    metrics with the data they were measured on.

    Returns:
        ``(path written, metadata)``.
    """
    source = Path(source)
    checkpoint = source / "checkpoints" / "best.ckpt" if source.is_dir() else source
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    model = load_model(checkpoint)
    metadata = dict(model.metadata)
    metadata["source_checkpoint"] = checkpoint.name
    if (run_dir / "config.yaml").is_file():
        metadata["recipe"] = (run_dir / "config.yaml").read_text()
    if evaluate:
        indices = None
        if test_data is None and (run_dir / "split.json").is_file():
            record = json.loads((run_dir / "split.json").read_text())
            if isinstance(record.get("test"), dict) and record["test"].get("indices"):
                test_data, indices = split_entry(run_dir / "split.json", "test")
        if test_data is not None:
            summary, _ = evaluate_file(model, test_data, indices=indices)
            metadata["test_metrics"] = summary["metrics"]
            metadata["test_data"] = {"file": Path(test_data).name, "num_frames": summary["num_frames"]}
    path = save_model(model, out, metadata)
    return path, read_metadata(path)
