"""``Potential`` (energy) and ``ForceField``, the one autograd wrapper for forces and stress."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from ase.data import chemical_symbols
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn import ScaleShift, ZBLRepulsion, edge_vectors, scatter_sum


class Potential(nn.Module):
    """Per-atom energies: representation -> atomwise readout -> shift/scale (+ ZBL prior).

    Args:
        representation: a layer family; ``forward(graph) -> [N, representation.num_features]``.
        readout: invariant features to one number per atom.
        scale_shift: per-element E0 and the energy scale.
        elements: atomic numbers the model knows, in the order of the species index.
        pair_repulsion: optional ZBL prior, added to the per-atom energies.
    """

    def __init__(
        self,
        representation: nn.Module,
        readout: nn.Module,
        scale_shift: ScaleShift,
        elements: Sequence[int],
        pair_repulsion: ZBLRepulsion | None = None,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.readout = readout
        self.scale_shift = scale_shift
        self.pair_repulsion = pair_repulsion
        self.elements = [int(z) for z in elements]
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("species_table", table, persistent=False)
        self._baseline_cache: tuple[tuple, Tensor] | None = None

    def species(self, z: Tensor) -> Tensor:
        """Map atomic numbers [N] to species indices [N]; unknown elements raise ``ValueError``."""
        species = self.species_table[z.clamp(0, 118)]
        if bool((species < 0).any()):
            unknown = sorted({int(n) for n in z[species < 0]})
            names = [chemical_symbols[n] if 0 < n < 119 else str(n) for n in unknown]
            known = [chemical_symbols[n] for n in self.elements]
            raise ValueError(f"model knows elements {known}, got unknown element(s) {names}")
        return species

    def forward(self, data: Data) -> Tensor:
        """Per-atom energies [N] in eV. Edge geometry is computed here from ``pos`` and ``cell``.

        The readout is referenced to the isolated atom: ``E_i = scale * (y_i - y_i^isolated) + E0``,
        where ``y^isolated`` is the readout of the same species with no neighbours. An atom with no
        neighbours therefore gets exactly its E0, whatever the weights.
        """
        batch = _batch(data)
        graph = copy.copy(data)
        graph[keys.BATCH] = batch
        graph[keys.SPECIES] = self.species(data[keys.ATOMIC_NUMBERS])
        edge_vec = edge_vectors(
            data[keys.POSITIONS], data[keys.CELL], data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT], batch
        )
        graph[keys.EDGE_VEC] = edge_vec
        graph[keys.EDGE_LEN] = torch.linalg.vector_norm(edge_vec, dim=-1)
        readout = self.readout(self.representation(graph))
        baseline = self._baseline(edge_vec)
        atomic = self.scale_shift(readout - baseline[graph[keys.SPECIES]], graph[keys.SPECIES])
        if self.pair_repulsion is not None:
            atomic = atomic + self.pair_repulsion(
                data[keys.ATOMIC_NUMBERS], data[keys.EDGE_INDEX], graph[keys.EDGE_LEN]
            )
        return atomic

    def _baseline(self, like: Tensor) -> Tensor:
        """:meth:`isolated_readout`, cached in eval mode until a weight changes.

        The baseline depends on the weights only, and one more pass of the representation costs
        about 15 % of a small molecule's energy + forces. Training needs its gradient, so it is
        recomputed there. Any in-place change of a weight (an optimizer or EMA step,
        ``load_state_dict``, ``torch.no_grad()`` edits) bumps the tensor's version and a new tensor
        has a new address, so either invalidates the cache. Edits through ``param.data`` bypass
        version tracking: call ``model.eval()`` again after them (``train``/``eval`` clear the cache).
        """
        if self.training:
            self._baseline_cache = None
            return self.isolated_readout(like)
        tensors = (*self.parameters(), *self.buffers())
        key = (like.dtype, like.device, *((id(t), t.data_ptr(), t._version) for t in tensors))
        if self._baseline_cache is None or self._baseline_cache[0] != key:
            with torch.no_grad():
                self._baseline_cache = (key, self.isolated_readout(like))
        return self._baseline_cache[1]

    def train(self, mode: bool = True) -> Potential:
        self._baseline_cache = None
        return super().train(mode)

    def isolated_readout(self, like: Tensor) -> Tensor:
        """Readout of each species as an isolated atom [num_elements], in the dtype of ``like``."""
        num = len(self.elements)
        device = like.device
        empty = torch.zeros(0, dtype=torch.long, device=device)
        arange = torch.arange(num, device=device)
        graph = Data(
            num_nodes=num,
            batch=arange,
            natoms=torch.ones(num, dtype=torch.long, device=device),
            species=arange,
            edge_index=empty.view(2, 0),
            edge_shift=empty.view(0, 3),
            edge_vec=like.new_zeros(0, 3),
            edge_len=like.new_zeros(0),
        )
        return self.readout(self.representation(graph))


class ForceField(nn.Module):
    """Energy, forces = -dE/dpos and stress = (1/V) dE/d(strain) for any :class:`Potential`.

    Stress follows the ASE sign (positive = tensile) and is computed for batches with any periodic
    frame; frames with zero cell volume get zero stress. The graph for second derivatives is kept
    only while training (``self.training`` and grad enabled), so inference does not pay for it.

    Args:
        potential: the per-atom energy model.
        config: plain-data description used to rebuild the model (see :func:`build_model`).
    """

    def __init__(self, potential: Potential, config: dict | None = None) -> None:
        super().__init__()
        self.potential = potential
        self.config = dict(config or {})

    @property
    def cutoff(self) -> float:
        return float(self.potential.representation.cutoff)

    @property
    def elements(self) -> list[int]:
        return list(self.potential.elements)

    def forward(self, data: Data) -> dict[str, Tensor]:
        """Returns ``energy`` [B], ``forces`` [N, 3], ``atomic_energy`` [N] and ``stress`` [B, 3, 3]
        (the last only when some frame is periodic)."""
        dtype = self.potential.scale_shift.scale.dtype
        batch = _batch(data)
        num_frames = int(data[keys.CELL].shape[0])
        pos = data[keys.POSITIONS].to(dtype)
        cell = data[keys.CELL].to(dtype)
        want_stress = bool(data[keys.PBC].any())
        create_graph = self.training and torch.is_grad_enabled()
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True) if not pos.requires_grad else pos
            inputs = [pos]
            if want_stress:
                strain = torch.zeros(num_frames, 3, 3, dtype=dtype, device=pos.device, requires_grad=True)
                inputs.append(strain)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ni,nij->nj", pos, sym[batch])
                cell = cell + torch.bmm(cell, sym)
            graph = copy.copy(data)
            graph[keys.POSITIONS] = pos
            graph[keys.CELL] = cell
            atomic = self.potential(graph)
            energy = scatter_sum(atomic, batch, num_frames)
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
        out = {keys.ENERGY: energy, keys.FORCES: -grads[0], keys.ATOMIC_ENERGY: atomic}
        if want_stress:
            volume = torch.linalg.det(data[keys.CELL].to(dtype)).abs()
            safe = torch.where(volume > 1e-8, volume, torch.ones_like(volume))
            out[keys.STRESS] = grads[1] / safe.view(-1, 1, 1) * (volume > 1e-8).view(-1, 1, 1)
        return out


def _batch(data: Data) -> Tensor:
    batch = data.get(keys.BATCH)
    if batch is None:
        batch = torch.zeros(data[keys.POSITIONS].shape[0], dtype=torch.long, device=data[keys.POSITIONS].device)
    return batch
