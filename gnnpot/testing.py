"""Reusable physics checks for any gnnpot model (run over every family by the contract test).

Each check builds graphs with the model's own cutoff, evaluates in the model's dtype (use float64
for tight tolerances), raises ``AssertionError`` with the numbers when it fails, and returns the
largest error it saw so that reports can quote it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.models import ForceField
from gnnpot.nn import edges_paired
from gnnpot.representations import get_family


def evaluate(model: ForceField, frames: Sequence[Atoms], train: bool = False) -> list[dict[str, np.ndarray]]:
    """Energy, forces, stress and per-atom energies of ``frames``, evaluated as one batch."""
    out = _forward(model, frames, train)
    ptr = np.cumsum([0] + [len(a) for a in frames])
    results = []
    for k, atoms in enumerate(frames):
        atom_slice = slice(ptr[k], ptr[k + 1])
        result = {
            keys.ENERGY: float(out[keys.ENERGY][k]),
            keys.FORCES: _np(out[keys.FORCES][atom_slice]),
            keys.ATOMIC_ENERGY: _np(out[keys.ATOMIC_ENERGY][atom_slice]),
        }
        if keys.STRESS in out and atoms.pbc.any():
            result[keys.STRESS] = _np(out[keys.STRESS][k])
        results.append(result)
    return results


def random_rotation(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    """A uniformly random 3x3 rotation; with ``reflect``, an improper one (det = -1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if reflect else q


def check_invariance(
    model: ForceField, atoms: Atoms, reflections: bool = True, seed: int = 0, rtol: float = 1e-9
) -> float:
    """Energy invariant, forces and stress equivariant under the symmetries of physics.

    Rotation, translation, permutation, and reflection when ``reflections``.
    """
    rng = np.random.default_rng(seed)
    (ref,) = evaluate(model, [atoms])
    transforms = {"rotation": random_rotation(rng)}
    if reflections:
        transforms["reflection"] = random_rotation(rng, reflect=True)
    frames, expected = [], []
    for name, rot in transforms.items():
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + rng.normal(size=3)
        moved.cell = atoms.cell.array @ rot.T
        frames.append(moved)
        expected.append((name, rot, np.arange(len(atoms))))
    perm = rng.permutation(len(atoms))
    frames.append(atoms[perm])
    expected.append(("permutation", np.eye(3), perm))
    worst = 0.0
    for (name, rot, order), result in zip(expected, evaluate(model, frames)):
        errors = {
            "energy": abs(result[keys.ENERGY] - ref[keys.ENERGY]),
            "forces": np.abs(result[keys.FORCES] - ref[keys.FORCES][order] @ rot.T).max(),
        }
        if keys.STRESS in ref:
            errors["stress"] = np.abs(result[keys.STRESS] - rot @ ref[keys.STRESS] @ rot.T).max()
        worst = max(worst, _assert_small(errors, _scale(ref), rtol, f"{name} of {atoms.get_chemical_formula()}"))
    return worst


def check_forces_fd(model: ForceField, atoms: Atoms, step: float = 1e-4, rtol: float = 1e-6) -> float:
    """Forces match central finite differences of the energy: max|F - F_fd| / max|F| < ``rtol``.

    The step balances the O(step^2) truncation error against rounding of total energies that
    include large E0s (thousands of eV for molecules): 1e-4 Å keeps both near 1e-7.
    """
    (ref,) = evaluate(model, [atoms])
    frames = []
    for index in range(len(atoms)):
        for axis in range(3):
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[index, axis] += sign * step
                frames.append(moved)
    energies = np.array([r[keys.ENERGY] for r in evaluate(model, frames)]).reshape(len(atoms), 3, 2)
    forces_fd = -(energies[..., 0] - energies[..., 1]) / (2 * step)
    error = np.abs(ref[keys.FORCES] - forces_fd).max() / max(np.abs(ref[keys.FORCES]).max(), 1e-12)
    assert error < rtol, f"forces differ from finite differences: relative error {error:.3e} >= {rtol:.0e}"
    return float(error)


def check_stress_fd(model: ForceField, atoms: Atoms, step: float = 1e-5, rtol: float = 1e-6) -> float:
    """Stress matches ``(1/V) dE/d(strain)`` by central differences of symmetric strains."""
    if not atoms.pbc.all():
        raise ValueError("check_stress_fd needs a fully periodic cell")
    (ref,) = evaluate(model, [atoms])
    frames = []
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    for a, b in pairs:
        for sign in (1.0, -1.0):
            strain = np.zeros((3, 3))
            strain[a, b] += 0.5 * sign * step
            strain[b, a] += 0.5 * sign * step
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            frames.append(moved)
    energies = np.array([r[keys.ENERGY] for r in evaluate(model, frames)]).reshape(len(pairs), 2)
    stress_fd = np.zeros((3, 3))
    for (a, b), (plus, minus) in zip(pairs, energies):
        stress_fd[a, b] = stress_fd[b, a] = (plus - minus) / (2 * step) / atoms.get_volume()
    error = np.abs(ref[keys.STRESS] - stress_fd).max() / max(np.abs(ref[keys.STRESS]).max(), 1e-12)
    assert error < rtol, f"stress differs from finite strain: relative error {error:.3e} >= {rtol:.0e}"
    return float(error)


def check_batch(model: ForceField, frames: Sequence[Atoms], rtol: float = 1e-10) -> float:
    """A batch of different structures equals each one alone, and no gradient crosses frames."""
    batched = evaluate(model, frames)
    worst = 0.0
    for atoms, together in zip(frames, batched):
        (alone,) = evaluate(model, [atoms])
        errors = {key: np.abs(np.asarray(together[key]) - alone[key]).max() for key in alone}
        worst = max(worst, _assert_small(errors, _scale(alone), rtol, f"batch vs {atoms.get_chemical_formula()}"))
    # d(energy of frame 0) / d(positions of the other frames) must be exactly zero.
    batch = _batch(model, frames)
    batch[keys.POSITIONS].requires_grad_(True)
    was_training = model.training
    model.train()
    try:
        energy = model(batch)[keys.ENERGY]
        (grad,) = torch.autograd.grad(energy[0], batch[keys.POSITIONS])
    finally:
        model.train(was_training)
    leak = float(grad[len(frames[0]) :].abs().max()) if len(frames) > 1 else 0.0
    assert leak == 0.0, f"energy of frame 0 depends on other frames' positions (max gradient {leak:.3e})"
    return worst


def check_edge_order(model: ForceField, frames: Sequence[Atoms], rtol: float = 1e-10, seed: int = 0) -> float:
    """Shuffled edges (no longer in reversed pairs) give the same outputs as the paired list.

    gnnpot's neighbour lists pair each edge with its reverse and the layers share radial work
    within a pair (:mod:`gnnpot.nn.pairs`); any other edge order must take the plain path.
    """
    batch = _batch(model, frames)
    assert edges_paired(batch[keys.EDGE_INDEX], batch[keys.EDGE_SHIFT]), "neighbour list is not paired"
    shuffled = copy.copy(batch)
    order = torch.randperm(batch[keys.EDGE_INDEX].shape[1], generator=torch.Generator().manual_seed(seed))
    shuffled[keys.EDGE_INDEX] = batch[keys.EDGE_INDEX][:, order]
    shuffled[keys.EDGE_SHIFT] = batch[keys.EDGE_SHIFT][order]
    assert not edges_paired(shuffled[keys.EDGE_INDEX], shuffled[keys.EDGE_SHIFT])
    was_training = model.training
    model.eval()
    try:
        paired, plain = ({k: _np(v.detach()) for k, v in model(b).items()} for b in (batch, shuffled))
    finally:
        model.train(was_training)
    errors = {key: float(np.abs(paired[key] - plain[key]).max()) for key in paired}
    return _assert_small(errors, _scale(plain), rtol, "paired against shuffled edges")


def check_supercell(model: ForceField, atoms: Atoms, rtol: float = 1e-9) -> float:
    """A 2x2x2 supercell has 8x the energy, the same per-atom forces and the same stress."""
    supercell = atoms * (2, 2, 2)
    unit, big = evaluate(model, [atoms, supercell])
    errors = {
        "energy": abs(big[keys.ENERGY] - 8 * unit[keys.ENERGY]) / 8,
        "forces": np.abs(big[keys.FORCES] - np.tile(unit[keys.FORCES], (8, 1))).max(),
        "stress": np.abs(big[keys.STRESS] - unit[keys.STRESS]).max(),
    }
    return _assert_small(errors, _scale(unit), rtol, f"2x2x2 supercell of {atoms.get_chemical_formula()}")


def check_wrapping(model: ForceField, atoms: Atoms, rtol: float = 1e-9, seed: int = 0) -> float:
    """Moving atoms by lattice vectors (across the periodic boundary) changes nothing."""
    rng = np.random.default_rng(seed)
    moved = atoms.copy()
    moved.positions += rng.integers(-2, 3, size=(len(atoms), 3)) @ atoms.cell.array
    ref, result = evaluate(model, [atoms, moved])
    errors = {key: np.abs(np.asarray(result[key]) - ref[key]).max() for key in ref}
    return _assert_small(errors, _scale(ref), rtol, f"wrapped {atoms.get_chemical_formula()}")


def check_cutoff_continuity(
    model: ForceField, symbols: str = "CuAuCu", delta: float = 1e-6, tol: float = 1e-5
) -> float:
    """Energy and forces are continuous as a neighbour crosses the cutoff.

    Three collinear atoms: the first two 2.3 Å apart, the third at ``cutoff -/+ delta`` from the
    second (and beyond the cutoff of the first). Returns the largest jump in energy or force.
    """
    cutoff = model.cutoff
    frames = []
    for distance in (cutoff - delta, cutoff + delta):
        positions = [[0.0, 0.0, 0.0], [2.3, 0.0, 0.0], [2.3 + distance, 0.0, 0.0]]
        frames.append(Atoms(symbols, positions=positions))
    inside, outside = evaluate(model, frames)
    scale = _scale(inside)
    jumps = {
        "energy": abs(inside[keys.ENERGY] - outside[keys.ENERGY]) / scale,
        "forces": np.abs(inside[keys.FORCES] - outside[keys.FORCES]).max() / scale,
    }
    worst = max(jumps.values())
    assert worst < tol, f"discontinuity at the cutoff: {jumps}"
    return float(worst)


def check_isolated_atom(model: ForceField, e0: dict[int, float], tol: float = 1e-10) -> float:
    """An isolated atom of each element gets exactly its E0 and zero force."""
    frames = [Atoms(numbers=[z]) for z in model.elements]
    worst = 0.0
    for atoms, result in zip(frames, evaluate(model, frames)):
        error = abs(result[keys.ENERGY] - e0.get(int(atoms.numbers[0]), 0.0))
        assert error < tol, f"isolated {atoms.get_chemical_formula()}: energy error {error:.3e} vs E0"
        assert np.abs(result[keys.FORCES]).max() == 0.0
        worst = max(worst, error)
    return float(worst)


def _forward(model: ForceField, frames: Sequence[Atoms], train: bool) -> dict[str, torch.Tensor]:
    was_training = model.training
    model.train(train)
    try:
        return {k: v.detach() for k, v in model(_batch(model, frames)).items()}
    finally:
        model.train(was_training)


def _batch(model: ForceField, frames: Sequence[Atoms]) -> Batch:
    dtype = next(model.parameters()).dtype
    graphs = [AtomicData.from_atoms(a, model.cutoff, frame_id=k, dtype=dtype) for k, a in enumerate(frames)]
    return Batch.from_data_list(graphs)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.cpu().double().numpy()


def _scale(result: dict) -> float:
    """A magnitude to make errors relative: the largest |value| among the outputs, at least 1."""
    return max([1.0] + [float(np.abs(np.asarray(v)).max()) for v in result.values() if np.size(v)])


def _assert_small(errors: dict[str, float], scale: float, rtol: float, what: str) -> float:
    worst = max(errors.values()) / scale
    assert worst < rtol, f"{what}: errors {errors} exceed {rtol:.0e} x {scale:.3g}"
    return float(worst)


def triclinic_cell() -> Atoms:
    """Three Cu/Au atoms in a skewed periodic cell smaller than twice a 4-5 Å cutoff."""
    cell = np.array([[3.1, 0.2, 0.1], [0.6, 3.3, -0.2], [0.3, 0.5, 3.6]])
    frac = np.array([[0.05, 0.1, 0.0], [0.5, 0.45, 0.55], [0.9, 0.6, 0.35]])
    return Atoms("CuAuCu", scaled_positions=frac, cell=cell, pbc=True)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build under another default dtype (e3nn builds its reference D matrices in it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def tiny_hparams(name: str) -> dict[str, Any]:
    """A tiny model's hyperparameters for family ``name`` (its ``tiny_hparams``), so tests stay fast."""
    return dict(get_family(name).tiny_hparams)
