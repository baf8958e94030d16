"""``predict``: energies, forces and stresses of many structures, evaluated in batches.

The graphs are the calculator's (:meth:`AtomicData.from_atoms`, positions in float64) and a batch
goes through the model in one call; only one batch of graphs is held at a time, so memory is
bounded by ``batch_size``, and the results come back in the input order. :func:`batches` is the
loop itself, shared with ``gnnpot eval`` (:func:`gnnpot.training.evaluate.evaluate_file`), which
builds the graphs with their labels. A model call of :data:`~gnnpot.launch.LARGE_SYSTEM` atoms or
more (all structures of the batch together) switches the allocator as the calculator does
(:func:`gnnpot.launch.reuse_large_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.data.checks import DataError, check_numbers
from gnnpot.data.io import frame_labels
from gnnpot.launch import reuse_large_blocks
from gnnpot.models import ForceField, clone_model, load_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Where predict's errors point: "structures, frame 3" is ``structures[3]``.
SOURCE = "structures"


def inference_model(
    model: ForceField | str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> ForceField:
    """A frozen copy of ``model`` for inference: eval mode, no parameter gradients, cast as asked.

    The caller's model is left alone (its dtype, device, mode and gradients).

    Args:
        model: a :class:`ForceField`, or anything :func:`~gnnpot.models.load_model` reads (a model
            file, a Lightning checkpoint, a run folder, a pretrained name such as ``painn-emt-cuau``).
        dtype: ``"float32"``, ``"float64"`` or a torch dtype; default: the model's own.
        device: torch device to run on.

    Raises:
        ValueError: an unknown dtype name.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        dtype = _DTYPES[dtype]
    copy = load_model(model) if isinstance(model, (str, Path)) else clone_model(model)
    dtype = dtype or next(copy.parameters()).dtype
    return copy.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)


def predict(
    structures: Iterable[Atoms],
    model: ForceField | str | Path,
    batch_size: int = 16,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Energy, forces and (3D-periodic cells) stress of each structure, ``batch_size`` structures per model call.

    Molecules, slabs and periodic cells of any sizes may be mixed. Each result is what
    :class:`~gnnpot.calculators.GNNPotCalculator` gives for that structure alone, so it can go
    straight onto a :class:`~ase.calculators.singlepoint.SinglePointCalculator`::

        results = gnnpot.predict(frames, "painn-emt-cuau", batch_size=32)
        for atoms, result in zip(frames, results):
            atoms.calc = SinglePointCalculator(atoms, **result)

    Args:
        structures: the structures (positions in Å); read one batch at a time, so a lazy sequence
            (a :class:`~gnnpot.data.FrameStore`, a generator) is never loaded whole.
        model: a :class:`ForceField` or anything :func:`~gnnpot.models.load_model` reads; it is
            used through a frozen copy (:func:`inference_model`).
        batch_size: structures per model call (> 0); memory grows with it, speed too up to a point.
        dtype: the model's float dtype for the evaluation (``"float32"``, ``"float64"``); default
            its own. Positions are passed in float64 either way.
        device: torch device to run on.

    Returns:
        One dict per structure, in the input order: ``energy`` and ``free_energy`` (float, eV),
        ``forces`` ([N, 3] float64, eV/Å), ``energies`` ([N], per-atom energies, eV) and, only for
        cells periodic in all three directions, ``stress`` (Voigt [6] float64, eV/Å³, ASE sign:
        ``(1/V) dE/d(strain)``, positive is tensile).

    Raises:
        ValueError: ``batch_size`` is not a positive integer, or a structure is empty, has an
            element the model does not know or is invalid (NaN positions, overlapping atoms, a
            degenerate cell); the message names it as ``"structures, frame <index>"``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer > 0, got {batch_size!r}")
    model = inference_model(model, dtype=dtype, device=device)
    results: list[dict[str, Any]] = []
    for chunk, _, out in batches(structures, model, batch_size):
        results.extend(_split(out, chunk))
    return results


def batches(
    structures: Iterable[Atoms],
    model: ForceField,
    batch_size: int,
    labelled: bool = False,
    source: str = SOURCE,
    frame_ids: Sequence[int] | None = None,
) -> Iterator[tuple[list[Atoms], Batch, dict[str, torch.Tensor]]]:
    """The batched-inference loop: ``(structures, batch, model outputs)`` for each model call.

    Args:
        structures: the structures, read one batch at a time.
        model: the model, as it is (see :func:`inference_model` for a frozen copy).
        batch_size: structures per model call.
        labelled: give each graph the labels of its structure's calculator (NaN, weight 0 where
            missing), for metrics.
        source: the file (or ``"structures"``) that errors name.
        frame_ids: the frame number of each structure in ``source`` for errors; default its position.
    """
    device = _device(model)
    for start, chunk in _chunks(structures, batch_size):
        graphs = [
            _graph(atoms, start + k if frame_ids is None else frame_ids[start + k], model, labelled, source)
            for k, atoms in enumerate(chunk)
        ]
        batch = Batch.from_data_list(graphs).to(device)
        reuse_large_blocks(batch.num_nodes)
        yield chunk, batch, model(batch)


def _device(model: ForceField) -> torch.device:
    """The device of ``model``'s weights."""
    return next(model.parameters()).device


def _chunks(structures: Iterable[Atoms], size: int) -> Iterator[tuple[int, list[Atoms]]]:
    """``(index of the first, structures)`` of consecutive chunks of ``size`` (the last may be short)."""
    iterator, start = iter(structures), 0
    while chunk := list(islice(iterator, size)):
        yield start, chunk
        start += len(chunk)


def _graph(atoms: Atoms, index: int, model: ForceField, labelled: bool = False, source: str = SOURCE) -> AtomicData:
    """The graph of frame ``index`` of ``source`` for ``model``, or an error naming the frame.

    Raises:
        DataError: not an ``Atoms``, no atoms, not an element, an element the model does not know,
            or a check of :meth:`AtomicData.from_atoms` failed.
    """
    where = f"{source}, frame {index}"
    if not isinstance(atoms, Atoms):
        raise DataError(f"{where}: expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise DataError(f"{where}: the structure has no atoms")
    check_numbers(atoms.numbers, where)
    unknown = sorted(set(atoms.numbers.tolist()) - set(model.elements))
    if unknown:
        raise DataError(
            f"{where}: element(s) {[chemical_symbols[z] for z in unknown]} unknown to the model, which "
            f"knows {[chemical_symbols[z] for z in model.elements]}"
        )
    labels = frame_labels(atoms) if labelled else None
    return AtomicData.from_atoms(atoms, model.cutoff, labels, source=source, frame_id=index, dtype=torch.float64)


def _split(out: dict[str, torch.Tensor], chunk: list[Atoms]) -> list[dict[str, Any]]:
    """The batch's outputs, one dict per structure (see :func:`predict`)."""
    counts = [len(atoms) for atoms in chunk]
    energy = out[keys.ENERGY].detach().cpu().double().numpy()
    forces = np.split(out[keys.FORCES].detach().cpu().double().numpy(), np.cumsum(counts)[:-1])
    energies = np.split(out[keys.ATOMIC_ENERGY].detach().cpu().double().numpy(), np.cumsum(counts)[:-1])
    stress = out.get(keys.STRESS)
    stress = None if stress is None else stress.detach().cpu().double().numpy()
    results = []
    for k, atoms in enumerate(chunk):
        result = {
            "energy": float(energy[k]),
            "free_energy": float(energy[k]),
            "forces": forces[k],
            "energies": energies[k],
        }
        if stress is not None and atoms.pbc.all():
            result["stress"] = full_3x3_to_voigt_6_stress(stress[k])
        results.append(result)
    return results
