"""``Potential``: per-atom energies from a family's graph (forces and stress: :mod:`gnnpot.models.forces`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase.data import chemical_symbols
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn import ScaleShift, ZBLRepulsion
from gnnpot.nn.dispersion import D3Dispersion
from gnnpot.nn.long_range import Electrostatics
from gnnpot.representations import Representation, family_graph, isolated_graph


class Potential(nn.Module):
    """Per-atom energies: representation -> readout -> shift/scale (+ ZBL) (+ electrostatics) (+ dispersion).

    The optional terms are added after the per-element shift and scale, in eV as they are: the
    energy scale multiplies the learned readout only, and E0 is the energy of an isolated atom,
    which no term changes (no neighbours for ZBL and D3, zero charge for a neutral isolated atom).
    E0 and the scale are fitted to the data's total energies and forces, these terms included;
    the local readout learns what they do not give.

    Args:
        representation: a layer family (:class:`~gnnpot.representations.Representation`).
        readout: invariant features [N, representation.num_features] to one number per atom [N].
        scale_shift: per-element E0 (eV) and the energy scale (eV).
        elements: atomic numbers the model knows, in the order of the species index.
        pair_repulsion: optional ZBL prior, added to the per-atom energies.
        long_range: optional electrostatic head (:class:`~gnnpot.nn.long_range.Electrostatics`): charges
            from the family's features (or the data), their Ewald or direct Coulomb energy added to
            the per-atom energies. Its energy depends on ``pos`` and ``cell`` directly, not only
            through the edge vectors (see :attr:`direct_geometry`).
        dispersion: optional fixed D3(BJ) dispersion (:class:`~gnnpot.nn.dispersion.D3Dispersion`),
            added to the per-atom energies; it too depends on ``pos`` and ``cell`` directly.
    """

    def __init__(
        self,
        representation: Representation,
        readout: nn.Module,
        scale_shift: ScaleShift,
        elements: Sequence[int],
        pair_repulsion: ZBLRepulsion | None = None,
        long_range: Electrostatics | None = None,
        dispersion: D3Dispersion | None = None,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.readout = readout
        self.scale_shift = scale_shift
        self.pair_repulsion = pair_repulsion
        self.long_range = long_range
        self.dispersion = dispersion
        self.elements = [int(z) for z in elements]
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("species_table", table, persistent=False)
        self.register_buffer("element_numbers", torch.tensor(self.elements, dtype=torch.long), persistent=False)

    def species(self, z: Tensor, checked: bool = False) -> Tensor:
        """Species indices [N] of atomic numbers ``z`` [N].

        Args:
            z: atomic numbers.
            checked: the caller has checked ``z`` against :attr:`elements` on the host, so the check
                here (a device-to-host read) is skipped.

        Raises:
            ValueError: an element the model does not know (the one place this is checked on the device).
        """
        species = self.species_table[z.clamp(0, 118)]
        if not checked and bool((species < 0).any()):
            unknown = sorted({int(n) for n in z[species < 0]})
            names = [chemical_symbols[n] if 0 < n < 119 else str(n) for n in unknown]
            known = [chemical_symbols[n] for n in self.elements]
            raise ValueError(f"model knows elements {known}, got unknown element(s) {names}")
        return species

    @property
    def direct_geometry(self) -> bool:
        """Whether the energy depends on ``pos`` and ``cell`` directly, not only through the edge vectors.

        Then :func:`~gnnpot.models.forces.energy_gradients` puts ``pos`` and ``cell`` in the graph
        and differentiates with respect to them too.
        """
        return self.long_range is not None or self.dispersion is not None

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """The index tensors of the family's, the long-range head's and the dispersion's ``prepare`` (eager).

        Args:
            data: the input graph (see :meth:`~gnnpot.representations.Representation.prepare`).
        """
        prepared = self.representation.prepare(data)
        for term in (self.long_range, self.dispersion):
            if term is not None:
                more = term.prepare(data)
                if clash := sorted(set(prepared) & set(more) - {keys.PBC}):  # pbc: the data's own, passed on
                    raise ValueError(f"{type(term).__name__} prepares {clash}, which another part prepares too")
                prepared = {**prepared, **more}
        return prepared

    def forward(self, graph: Data, baseline: Tensor | None = None) -> Tensor:
        """Per-atom energies [N] in eV.

        The readout is referenced to the isolated atom: ``E_i = scale * (y_i - y_i^isolated) + E0``,
        where ``y^isolated`` is the readout of the same species with no neighbours. An atom with no
        neighbours therefore gets exactly its E0, whatever the weights.

        Args:
            graph: the graph of :func:`~gnnpot.representations.family_graph`.
            baseline: [num_elements] :meth:`isolated_readout`, when the caller keeps it (inference);
                computed here when ``None`` (training needs its gradient).
        """
        species = graph[keys.SPECIES]
        features = self.representation(graph)
        readout = self.readout(features)
        baseline = self.isolated_readout(graph[keys.EDGE_VEC]) if baseline is None else baseline
        atomic = self.scale_shift(readout - baseline[species], species)
        if self.pair_repulsion is not None:
            atomic = atomic + self.pair_repulsion(
                graph[keys.ATOMIC_NUMBERS], graph[keys.EDGE_INDEX], graph[keys.EDGE_LEN]
            )
        if self.long_range is not None:
            atomic = atomic + self.long_range(graph, features)
        if self.dispersion is not None:
            atomic = atomic + self.dispersion(graph, features)
        return atomic

    def isolated_readout(self, like: Tensor) -> Tensor:
        """Readout of each species as an isolated atom [num_elements], in the dtype of ``like``."""
        data = isolated_graph(self.element_numbers)
        graph = family_graph(
            data[keys.ATOMIC_NUMBERS],
            data[keys.SPECIES],
            data[keys.EDGE_INDEX],
            data[keys.EDGE_SHIFT],
            like.new_zeros(0, 3),
            data[keys.BATCH],
            prepared=self.representation.prepare(data),
        )
        return self.readout(self.representation(graph))
