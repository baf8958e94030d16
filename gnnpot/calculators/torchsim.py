"""``GNNPotModel``: a gnnpot model as a torch-sim ``ModelInterface``, for batched MD and relaxation.

torch-sim (``pip install torch-sim-atomistic``) keeps many systems in one ``SimState``: positions
[N, 3] Å, ``cell`` [B, 3, 3] Å with the lattice vectors as *columns* (``row_vector_cell`` is
gnnpot's and ASE's rows), ``pbc``, ``atomic_numbers`` [N] and ``system_idx`` [N]. Its models
return ``energy`` [B] eV, ``forces`` [N, 3] eV/Å and ``stress`` [B, 3, 3] eV/Å³ with the sign of
ASE and gnnpot, ``(1/V) dE/d(strain)`` (torch-sim's ``get_pressure`` takes ``-trace / 3``, and its
MACE interface passes MACE's stress, which has this sign, through unchanged).

The graph is gnnpot's own: each system's neighbour list is kept between calls as in the ASE
calculator (:class:`~gnnpot.data.SkinNeighborList`, built on the CPU with vesin, in the paired
order of :mod:`gnnpot.keys`), so the results equal :class:`~gnnpot.calculators.GNNPotCalculator`'s.
From :data:`~gnnpot.launch.LARGE_SYSTEM` atoms in a state (all its systems together), the allocator
switches as the calculator's does (:func:`gnnpot.launch.reuse_large_blocks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # an optional dependency
    raise ImportError("gnnpot.calculators.torchsim needs torch-sim: pip install torch-sim-atomistic") from err

from gnnpot import keys
from gnnpot.calculators.predict import inference_model
from gnnpot.data import AtomicData, SkinNeighborList
from gnnpot.data.checks import check_min_distance, check_positions
from gnnpot.launch import reuse_large_blocks
from gnnpot.models import ForceField

SOURCE = "torch-sim system"


class GNNPotModel(ModelInterface):
    """Energies, forces and stresses of a batch of systems (a torch-sim ``SimState``) with a gnnpot model.

    Example::

        import torch_sim as ts
        from gnnpot.calculators.torchsim import GNNPotModel

        model = GNNPotModel("painn-emt-cuau", dtype=torch.float64)
        final = ts.integrate(cells, model, integrator=ts.nve, n_steps=1000, temperature=300, timestep=0.002)

    Stress needs periodic systems: for a system that is not periodic in all three directions the
    ``stress`` output is NaN, the value torch-sim's runners store for a property that was not computed; set
    ``compute_stress=False`` there. Forces are computed with the energy in either case (one
    gradient); ``compute_forces=False`` only leaves them out of the output.

    Args:
        model: a :class:`ForceField`, or anything :func:`~gnnpot.models.load_model` reads (a model
            file, a run folder, a pretrained name such as ``painn-emt-cuau``); used through a
            frozen copy, so the caller's model is left alone.
        device: torch device; default CUDA when available, else the CPU (torch-sim's default).
        dtype: the model's float dtype, and so the outputs'; torch-sim states should use the same.
        compute_forces: return ``forces``.
        compute_stress: return ``stress``.
        skin: extra radius of the kept neighbour lists, Å; 0 builds them afresh at every call.
    """

    def __init__(
        self,
        model: ForceField | str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
        compute_forces: bool = True,
        compute_stress: bool = True,
        skin: float = 0.5,
    ) -> None:
        super().__init__()
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._dtype = dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff
        self.model = inference_model(model, dtype=dtype, device=self._device)
        self.skin = float(skin)
        self.neighbors: list[SkinNeighborList] = []  # one per system slot, kept between calls

    @property
    def cutoff(self) -> float:
        """Neighbour radius of the model, Å."""
        return self.model.cutoff

    @ModelInterface.compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        """Whether ``forces`` is in the output (they are computed with the energy either way)."""
        self._compute_forces = bool(value)

    @ModelInterface.compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        """Whether ``stress`` is in the output."""
        self._compute_stress = bool(value)

    def forward(self, state: ts.SimState | dict[str, torch.Tensor], **_: object) -> dict[str, torch.Tensor]:
        """``energy`` [B] eV, ``forces`` [N, 3] eV/Å and ``stress`` [B, 3, 3] eV/Å³ of the state's systems.

        Args:
            state: a ``SimState``, or a dict of its fields (``positions``, ``cell`` in torch-sim's
                column convention, ``pbc``, ``atomic_numbers``, ``system_idx``). Not modified.

        Raises:
            ValueError: an element the model does not know, NaN or inf positions, or two atoms
                closer than 0.1 Å (named by system index).
        """
        if isinstance(state, dict):
            masses = state.get("masses", torch.ones(state["positions"].shape[0], device=state["positions"].device))
            state = ts.SimState(**{**state, "masses": masses})
        if state.device != self._device:
            state = state.to(self._device)
        reuse_large_blocks(state.n_atoms)
        out = self.model(self._graph(state))
        energy = out[keys.ENERGY].detach()
        results = {"energy": energy}
        if self._compute_forces:
            results["forces"] = out[keys.FORCES].detach()
        if self._compute_stress:
            nan = torch.full((energy.shape[0], 3, 3), float("nan"), dtype=energy.dtype, device=energy.device)
            stress = out.get(keys.STRESS)
            periodic = torch.as_tensor(pbc_rows(state.pbc, energy.shape[0]).all(axis=1), device=energy.device)
            results["stress"] = nan if stress is None else torch.where(periodic.view(-1, 1, 1), stress.detach(), nan)
        return results

    def _graph(self, state: ts.SimState) -> AtomicData:
        """The batched graph of the state's systems, on the kept neighbour lists (see :mod:`gnnpot.keys`)."""
        positions, cells, system_idx = state.positions.detach(), state.row_vector_cell.detach(), state.system_idx
        num_systems = cells.shape[0]
        z = state.atomic_numbers.long()
        unknown = ~torch.isin(z, torch.as_tensor(self.model.elements, device=z.device))
        if bool(unknown.any()):
            first = int(unknown.nonzero()[0, 0])
            names = sorted({chemical_symbols[int(n)] for n in z[unknown] if 0 < n < len(chemical_symbols)})
            raise ValueError(
                f"{SOURCE} {int(system_idx[first])}: element(s) {names} unknown to the model, which knows "
                f"{[chemical_symbols[n] for n in self.model.elements]}"
            )
        counts = torch.bincount(system_idx, minlength=num_systems)
        pbc = pbc_rows(state.pbc, num_systems)
        pos_np, cell_np = positions.cpu().double().numpy(), cells.cpu().double().numpy()
        while len(self.neighbors) < num_systems:
            self.neighbors.append(SkinNeighborList(self.cutoff, skin=self.skin))
        edges, shifts, start = [], [], 0
        for system, count in enumerate(counts.tolist()):
            where = f"{SOURCE} {system}"
            pos = pos_np[start : start + count]
            check_positions(pos, where)
            try:
                i, j, shift, dist = self.neighbors[system].update(pos, cell_np[system], pbc[system])
            except ValueError as err:  # a degenerate periodic cell
                raise ValueError(f"{where}: {err}") from err
            check_min_distance(i, j, dist, where)
            edges.append(np.stack([i, j]) + start)
            shifts.append(shift)
            start += count
        return AtomicData(
            z=z,
            pos=positions,
            cell=cells,
            pbc=torch.as_tensor(pbc, device=self._device),
            natoms=counts,
            batch=system_idx,
            edge_index=torch.as_tensor(np.concatenate(edges, axis=1), device=self._device),
            edge_shift=torch.as_tensor(np.concatenate(shifts), device=self._device),
            total_charge=torch.zeros(num_systems, dtype=positions.dtype, device=self._device),
            num_nodes=positions.shape[0],
        )


def pbc_rows(pbc: bool | torch.Tensor, num_systems: int) -> np.ndarray:
    """Periodicity [B, 3] of each system from torch-sim's ``pbc``: one bool (torch-sim 0.3), [3] or [B, 3]."""
    rows = np.asarray(torch.as_tensor(pbc).cpu(), dtype=bool)
    if rows.size == 1:
        rows = np.repeat(rows.reshape(1), 3)
    return np.broadcast_to(rows.reshape(-1, 3), (num_systems, 3)).copy()
