"""Closed-form fits of the kernel models: the sparse GAP-like ``kernel`` family and Coulomb-matrix KRR.

**Sparse kernel** (:func:`fit_sparse_kernel`), the model of :mod:`gnnpot.representations.kernel`:

1. E0 per element as every gnnpot model gets it (:func:`gnnpot.data.fit_e0`: isolated-atom
   frames when every element has one, else least squares).
2. Inducing environments: **farthest-point sampling** among the training atoms of each element, in
   the kernel's own distance (``2 - 2 k``; ``k`` grows with ``q . q'``, so the farthest environment
   is the one least similar to all chosen so far), starting from the atom most like the element's
   mean. It spans the spread of the environments, rare ones included, where random picks or
   k-means centres follow their density; it is deterministic and costs ``O(n M)``. The ``M``
   environments are shared among the elements in proportion to their atoms, at least one each.
3. The projected-process (subset-of-regressors) solution of GAP, with an energy row per frame
   and a force row per atom and direction, each divided by its noise: ``sigma_energy * sqrt(n)``
   for a frame of ``n`` atoms (``sigma_energy`` is per atom, GAP's ``sigma_per_atom``) and
   ``sigma_forces``; the prior ``alpha^T K_MM alpha / delta^2`` enters as ``M`` more rows ``L^T /
   delta`` with ``K_MM = L L^T``. ``alpha`` is the least-squares solution of the stacked system
   (``torch.linalg.lstsq``, float64): the normal equations ``(K_MM / delta^2 + Phi^T S^-1 Phi)
   alpha = Phi^T S^-1 y``, solved without forming them (their condition number is the square).
4. With validation frames, both noise levels are scaled together by each of ``sigma_factors``
   (the system is solved again, its rows are built once) and the lowest validation force MAE wins.

Force rows are derivatives of the frames' summed kernel features with respect to every
coordinate, taken in the cheaper direction. Frames are independent, so one **forward-mode** pass
(``torch.autograd.forward_ad``) moves atom ``a`` of every frame of a batch at once: ``3 *
max_atoms`` passes per batch, whatever its size; one **reverse-mode** pass gives one inducing
environment's column for every atom of the batch: ``M`` passes. Molecules take the forward mode
(27 passes for ethanol against M of hundreds), large periodic cells with few inducing
environments the reverse mode. The force block holds ``3 N M`` numbers (130 MB for 1000 ethanol
frames and M = 600).

**Coulomb-matrix KRR** (:func:`fit_coulomb_krr`, model :mod:`gnnpot.models.coulomb_krr`): kernel
ridge regression on energies, ``alpha = (K + lambda I)^-1 (E - sum E0)`` by Cholesky, with the
kernel (Laplacian or Gaussian), its width and ``lambda`` chosen on validation frames (energy MAE)
from a grid; widths are multiples of the median distance between training descriptors.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from ase import Atoms
from ase.data import chemical_symbols
from torch import Tensor
from torch.autograd import forward_ad
from torch_geometric.data import Batch, Data

from gnnpot import keys
from gnnpot.data import build_graphs, fit_e0
from gnnpot.models import ForceField, build_model
from gnnpot.models.coulomb_krr import KERNELS, CoulombKRR, kernel_matrix
from gnnpot.nn import edge_vectors, gather, scatter_sum
from gnnpot.representations import family_graph
from gnnpot.representations.kernel import SparseKernel

DTYPE = torch.float64


# --- the sparse kernel model ---------------------------------------------------------------------

# Multiples of both noise levels tried on validation frames (the regularisation against the prior).
SIGMA_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)


@dataclasses.dataclass
class KernelRows:
    """The rows of the least-squares system of some frames, before weighting by the noise.

    Attributes:
        energy: [F, M] ``Phi_f = scale * sum_{i in f} (k_i - k_iso)`` of the frames with an energy.
        energy_target: [F] their ``E_f - sum E0``, eV.
        natoms: [F] their numbers of atoms.
        forces: [C, M] ``-dPhi_f / dr`` of each force component with a label.
        forces_target: [C] the components, eV/Å.
    """

    energy: Tensor
    energy_target: Tensor
    natoms: Tensor
    forces: Tensor
    forces_target: Tensor

    def weighted(self, sigma_energy: float, sigma_forces: float, use_forces: bool = True) -> tuple[Tensor, Tensor]:
        """``(rows [R, M], targets [R])``, each row divided by its noise (energies: ``sigma_energy sqrt(n)``)."""
        noise = sigma_energy * self.natoms.sqrt()
        rows, targets = [self.energy / noise.unsqueeze(-1)], [self.energy_target / noise]
        if use_forces:
            rows.append(self.forces / sigma_forces)
            targets.append(self.forces_target / sigma_forces)
        return torch.cat(rows), torch.cat(targets)

    def errors(self, alpha: Tensor) -> dict[str, float]:
        """Energy per atom (meV/atom) and force (meV/Å) MAE of the weights ``alpha`` [M] on these rows."""
        result = {}
        if len(self.energy_target):
            error = (self.energy @ alpha - self.energy_target) / self.natoms
            result["energy_per_atom_mae"] = 1000.0 * float(error.abs().mean())
        if len(self.forces_target):
            result["forces_mae"] = 1000.0 * float((self.forces @ alpha - self.forces_target).abs().mean())
        return result

    @staticmethod
    def cat(parts: Sequence[KernelRows]) -> KernelRows:
        """The rows of several batches together."""
        return KernelRows(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(KernelRows)))


def fit_sparse_kernel(
    frames: Sequence[Atoms],
    cutoff: float,
    sigma_energy: float = 0.001,
    sigma_forces: float = 0.01,
    delta: float = 1.0,
    use_forces: bool = True,
    val_frames: Sequence[Atoms] | None = None,
    sigma_factors: Sequence[float] = SIGMA_FACTORS,
    batch_size: int = 50,
    **hparams: Any,
) -> tuple[ForceField, dict[str, Any]]:
    """A ``kernel`` model fitted in closed form to the energies and forces of ``frames``.

    Args:
        frames: labelled structures (:func:`gnnpot.data.read_frames`); frames or atoms without a
            label give no row for it.
        cutoff: neighbour radius and descriptor cutoff, Å.
        sigma_energy: energy noise per atom, eV (a frame of n atoms: ``sigma_energy * sqrt(n)``).
        sigma_forces: force noise per component, eV/Å.
        delta: prior energy scale of one atom's kernel term, eV.
        use_forces: add the force rows (``False``: energies only).
        val_frames: labelled structures to choose the noise on: both sigmas are multiplied by each
            of ``sigma_factors`` and the lowest validation force MAE (energy MAE without force
            labels) wins. ``None``: the sigmas as given.
        sigma_factors: the multiples tried on ``val_frames``.
        batch_size: frames per batch while building the rows.
        **hparams: the family's hyperparameters (``num_inducing``, ``zeta``, ``num_channels``, ...).

    Returns:
        ``(model, report)``: the model in float64 and eval mode with ``scale = 1``, and what the fit
        chose (sigmas, delta, inducing environments per element, validation errors of each sigma).

    Raises:
        ValueError: non-positive noise or delta, no labels, or fewer training atoms than
            inducing environments.
    """
    for name, value in (("sigma_energy", sigma_energy), ("sigma_forces", sigma_forces), ("delta", delta)):
        if not float(value) > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
    e0 = fit_e0(frames, elements)
    model = build_model("kernel", cutoff=cutoff, elements=elements, e0=e0, scale=1.0, **hparams).to(DTYPE).eval()
    rep: SparseKernel = model.potential.representation
    batches = _batches(frames, model.cutoff, batch_size)
    with torch.no_grad():
        descriptors, species = [], []
        for batch in batches:
            graph = _family_graph(model, batch, batch[keys.POSITIONS])
            descriptors.append(rep.descriptors(graph))
            species.append(graph[keys.SPECIES])
        x, atom_species = torch.cat(descriptors), torch.cat(species)
        chosen = select_inducing(rep.environments(x), atom_species, rep.num_features, rep.num_elements)
        rep.inducing.copy_(x[chosen])
        rep.inducing_elements.copy_(torch.nn.functional.one_hot(atom_species[chosen], rep.num_elements))
    train = KernelRows.cat([kernel_rows(model, batch, use_forces) for batch in batches])
    if not len(train.energy_target) + len(train.forces_target):
        raise ValueError("no energy or force labels to fit")
    prior = rep.inducing_kernel()
    factors = [1.0] if val_frames is None else list(sigma_factors)
    val = None
    if val_frames is not None:
        val = KernelRows.cat([kernel_rows(model, batch) for batch in _batches(val_frames, model.cutoff, batch_size)])
    grid = []
    for factor in factors:
        rows, targets = train.weighted(factor * sigma_energy, factor * sigma_forces, use_forces)
        alpha = solve_projected_process(rows, targets, prior, delta)
        grid.append({"sigma_energy": factor * sigma_energy, "sigma_forces": factor * sigma_forces, "alpha": alpha,
                     "val": val.errors(alpha) if val is not None else {}})  # fmt: skip
    key = "forces_mae" if val is not None and len(val.forces_target) else "energy_per_atom_mae"
    best = min(grid, key=lambda entry: entry["val"].get(key, 0.0))
    with torch.no_grad():
        model.potential.readout.weight.copy_(best["alpha"])
    counts = torch.bincount(atom_species[chosen], minlength=rep.num_elements).tolist()
    report = {
        "sigma_energy": best["sigma_energy"],
        "sigma_forces": best["sigma_forces"],
        "delta": float(delta),
        "use_forces": bool(use_forces),
        "inducing": "farthest-point sampling per element",
        "inducing_per_element": {chemical_symbols[z]: n for z, n in zip(elements, counts, strict=True)},
        "num_train_frames": len(frames),
        "train": train.errors(best["alpha"]),
    }
    if val is not None:
        report["val"] = best["val"]
        report["selection"] = [{k: v for k, v in entry.items() if k != "alpha"} for entry in grid]
    return model.eval(), report


def _batches(frames: Sequence[Atoms], cutoff: float, batch_size: int) -> list[Batch]:
    """The float64 graphs of ``frames`` in batches of ``batch_size``."""
    graphs = build_graphs(frames, cutoff, dtype=DTYPE)
    return [Batch.from_data_list(graphs[k : k + batch_size]) for k in range(0, len(graphs), batch_size)]


def select_inducing(environments: Tensor, species: Tensor, count: int, num_elements: int) -> Tensor:
    """Indices of ``count`` inducing atoms: farthest-point sampling per element (module docstring).

    Args:
        environments: [N, D'] unit vectors of the training atoms.
        species: [N] their species.
        count: M.
        num_elements: S.

    Returns:
        [M] int64 atom indices, element by element.
    """
    atoms = torch.bincount(species, minlength=num_elements)
    present = int((atoms > 0).sum())
    if count > len(species) or count < present:
        raise ValueError(
            f"num_inducing must be between the number of elements ({present}) and of training atoms "
            f"({len(species)}), got {count}"
        )
    # In proportion to the atoms, at least one per element present, largest remainders first.
    share = atoms.double() / atoms.sum() * (count - present)
    quota = share.floor().long() + (atoms > 0).long()
    order = torch.argsort(share - share.floor(), descending=True)
    for s in order[: count - int(quota.sum())]:
        quota[s] += 1
    chosen = []
    for s in range(num_elements):
        index = torch.nonzero(species == s).flatten()
        if quota[s] > 0:
            chosen.append(index[farthest_points(environments[index], int(quota[s]))])
    return torch.cat(chosen)


def farthest_points(points: Tensor, count: int) -> Tensor:
    """``count`` rows of unit vectors ``points`` [n, D'], each the least similar to those chosen before.

    The first is the one most similar to the mean direction; the similarity is ``q . q'``.
    """
    similarity = points @ points.mean(dim=0)
    first = int(torch.argmax(similarity))
    chosen = [first]
    closest = points @ points[first]  # the highest similarity of each point to a chosen one
    for _ in range(count - 1):
        following = int(torch.argmin(closest))
        chosen.append(following)
        closest = torch.maximum(closest, points @ points[following])
    return torch.tensor(chosen, dtype=torch.long, device=points.device)


def kernel_rows(model: ForceField, batch: Batch, use_forces: bool = True) -> KernelRows:
    """The :class:`KernelRows` of one batch: energy rows, and force rows by forward-mode derivatives.

    Args:
        model: a ``kernel`` model (float64).
        batch: labelled graphs.
        use_forces: build the force rows (else they are empty).
    """
    potential = model.potential
    rep: SparseKernel = potential.representation
    batch_index, num_frames = batch[keys.BATCH], int(batch[keys.NUM_ATOMS].numel())
    species = potential.species(batch[keys.ATOMIC_NUMBERS])
    isolated = rep.isolated_features().detach()
    scale = potential.scale_shift.scale.to(DTYPE)

    def features(pos: Tensor) -> Tensor:
        graph = _family_graph(model, batch, pos)
        return scale * scatter_sum(rep(graph) - gather(isolated, species), batch_index, num_frames)

    pos = batch[keys.POSITIONS].to(DTYPE)
    with torch.no_grad():
        energy_rows = features(pos)
    reference = scatter_sum(gather(potential.scale_shift.shift, species), batch_index, num_frames)
    energy_mask = batch[keys.ENERGY_WEIGHT] > 0
    force_rows = torch.zeros(pos.shape[0], 3, rep.num_features, dtype=DTYPE)
    atom_mask = (batch[keys.FORCES_WEIGHT] > 0)[batch_index] & use_forces
    max_atoms = int(batch[keys.NUM_ATOMS].max())
    if bool(atom_mask.any()) and 3 * max_atoms <= rep.num_features:  # forward mode: a pass per coordinate
        start = batch.ptr[:-1]
        for slot in range(max_atoms):
            frames = torch.nonzero(batch[keys.NUM_ATOMS] > slot).flatten()
            for direction in range(3):
                tangent = torch.zeros_like(pos)
                tangent[start[frames] + slot, direction] = 1.0
                with torch.no_grad(), forward_ad.dual_level():
                    derivative = forward_ad.unpack_dual(features(forward_ad.make_dual(pos, tangent))).tangent
                force_rows[start[frames] + slot, direction] = -derivative[frames]
    elif bool(atom_mask.any()):  # reverse mode: a pass per inducing environment
        with torch.enable_grad():
            moving = pos.detach().requires_grad_(True)
            summed = features(moving).sum(dim=0)  # frames are independent: one pass serves them all
            for column in range(rep.num_features):
                (gradient,) = torch.autograd.grad(summed[column], moving, retain_graph=True)
                force_rows[:, :, column] = -gradient
    return KernelRows(
        energy=energy_rows[energy_mask],
        energy_target=(batch[keys.ENERGY].to(DTYPE) - reference)[energy_mask],
        natoms=batch[keys.NUM_ATOMS].to(DTYPE)[energy_mask],
        forces=force_rows[atom_mask].reshape(-1, rep.num_features),
        forces_target=batch[keys.FORCES].to(DTYPE)[atom_mask].reshape(-1),
    )


def solve_projected_process(rows: Tensor, targets: Tensor, inducing_kernel: Tensor, delta: float) -> Tensor:
    """``alpha`` [M] minimising ``|rows alpha - targets|^2 + alpha^T K_MM alpha / delta^2``.

    Args:
        rows: [R, M] noise-weighted design rows.
        targets: [R] noise-weighted targets.
        inducing_kernel: [M, M] ``K_MM``, positive semi-definite (a jitter of 1e-10 of its diagonal
            is added for the Cholesky factor).
        delta: prior energy scale, eV.
    """
    jitter = 1e-10 * inducing_kernel.diagonal().mean() * torch.eye(len(inducing_kernel), dtype=DTYPE)
    factor = torch.linalg.cholesky(inducing_kernel.to(DTYPE) + jitter)
    system = torch.cat([rows.to(DTYPE), factor.T / delta])
    rhs = torch.cat([targets.to(DTYPE), targets.new_zeros(len(factor), dtype=DTYPE)])
    return torch.linalg.lstsq(system, rhs.unsqueeze(-1)).solution.squeeze(-1)


def _family_graph(model: ForceField, batch: Batch, pos: Tensor) -> Data:
    """The family's graph of ``batch`` with positions ``pos`` (differentiable in them)."""
    potential = model.potential
    edge_index, edge_shift = batch[keys.EDGE_INDEX], batch[keys.EDGE_SHIFT]
    edge_vec = edge_vectors(pos, batch[keys.CELL].to(pos.dtype), edge_index, edge_shift, batch[keys.BATCH])
    species = potential.species(batch[keys.ATOMIC_NUMBERS])
    prepared = potential.representation.prepare(batch)
    return family_graph(
        batch[keys.ATOMIC_NUMBERS], species, edge_index, edge_shift, edge_vec, batch[keys.BATCH], prepared=prepared
    )


# --- Coulomb-matrix kernel ridge regression --------------------------------------------------------

WIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
RIDGES = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2)


def fit_coulomb_krr(
    frames: Sequence[Atoms],
    val_frames: Sequence[Atoms],
    kernels: Sequence[str] = KERNELS,
    width_factors: Sequence[float] = WIDTH_FACTORS,
    ridges: Sequence[float] = RIDGES,
    cutoff: float = 2.0,
) -> tuple[CoulombKRR, dict[str, object]]:
    """Kernel ridge regression on Coulomb-matrix eigenvalues, hyperparameters chosen on ``val_frames``.

    Args:
        frames: labelled molecules to fit (energies; forces are not used).
        val_frames: labelled molecules to choose the kernel, width and ridge on (energy MAE).
        kernels: kernels to try (``"laplacian"``, ``"gaussian"``).
        width_factors: widths to try, as multiples of the median distance between training descriptors
            (L1 for the Laplacian, L2 for the Gaussian kernel).
        ridges: the ``lambda`` values to try (dimensionless: the kernel's diagonal is 1).
        cutoff: the model's graph radius (it uses no edges), Å.

    Returns:
        ``(model, selection)``: the model in float64 and eval mode, and the grid's best entry with
        its validation energy MAE (eV) and the grid searched.

    Raises:
        ValueError: no frames, unlabelled frames, periodic frames, or no validation frames.
    """
    if not frames or not val_frames:
        raise ValueError("Coulomb-matrix KRR needs training and validation frames (energies)")
    elements = sorted({int(z) for atoms in [*frames, *val_frames] for z in atoms.numbers})
    e0 = fit_e0(frames, elements)
    max_atoms = max(len(atoms) for atoms in [*frames, *val_frames])
    model = CoulombKRR(elements, max_atoms, num_train=len(frames), e0=e0, cutoff=cutoff).to(DTYPE)
    train_d, train_y = _descriptors_and_targets(model, frames)
    val_d, val_y = _descriptors_and_targets(model, val_frames)
    best: dict[str, object] = {}
    for kernel in kernels:
        p = 1 if kernel == "laplacian" else 2
        median = float(torch.cdist(train_d, train_d, p=p).median())
        for factor, ridge in itertools.product(width_factors, ridges):
            width = factor * max(median, 1e-12)
            alpha = _krr_weights(kernel_matrix(train_d, train_d, kernel, width), train_y, ridge)
            if alpha is None:
                continue
            error = float((kernel_matrix(val_d, train_d, kernel, width) @ alpha - val_y).abs().mean())
            if not best or error < best["val_energy_mae"]:
                best = {"kernel": kernel, "width": width, "ridge": ridge, "val_energy_mae": error, "alpha": alpha}
    if not best:
        raise ValueError("no kernel width and ridge of the grid gave a positive-definite system")
    alpha = best.pop("alpha")
    model = CoulombKRR(
        elements, max_atoms, num_train=len(frames), kernel=best["kernel"], width=best["width"], e0=e0, cutoff=cutoff
    ).to(DTYPE)
    with torch.no_grad():
        model.train_descriptors.copy_(train_d)
        model.alpha.copy_(alpha)
    grid = {"kernels": list(kernels), "width_factors": list(width_factors), "ridges": list(ridges)}
    return model.eval(), {**best, "grid": grid, "num_val": len(val_frames)}


def _descriptors_and_targets(model: CoulombKRR, frames: Sequence[Atoms]) -> tuple[Tensor, Tensor]:
    """Sorted eigenvalues [F, max_atoms] and energies minus their E0 sum [F] (eV) of labelled molecules."""
    energies = []
    for position, atoms in enumerate(frames):
        if atoms.calc is None or atoms.calc.results.get("energy") is None:
            raise ValueError(f"frame {position} has no energy label")
        energies.append(float(atoms.calc.results["energy"]))
    graphs = Batch.from_data_list(build_graphs(frames, model.cutoff, dtype=DTYPE))
    species = model.species(graphs[keys.ATOMIC_NUMBERS])
    with torch.no_grad():
        descriptors = model.descriptor(graphs[keys.ATOMIC_NUMBERS], graphs[keys.POSITIONS], graphs[keys.BATCH],
                                       graphs[keys.PBC])  # fmt: skip
        reference = scatter_sum(gather(model.scale_shift.shift, species), graphs[keys.BATCH], len(frames))
    return descriptors, torch.tensor(energies, dtype=DTYPE) - reference


def _krr_weights(kernel: Tensor, targets: Tensor, ridge: float) -> Tensor | None:
    """``(K + ridge I)^-1 y`` by Cholesky, or ``None`` when the matrix is not positive definite."""
    factor, info = torch.linalg.cholesky_ex(kernel + ridge * torch.eye(len(kernel), dtype=kernel.dtype))
    if int(info) != 0 or not math.isfinite(float(factor.diagonal().min())):
        return None
    return torch.cholesky_solve(targets.unsqueeze(-1), factor).squeeze(-1)
