"""Sparse kernel (GAP-like): each atom's kernel values against stored inducing environments.

A Gaussian approximation potential (Bartók et al., Phys. Rev. Lett. 104, 136403 (2010); the
sparse form of Bartók and Csányi, Int. J. Quantum Chem. 115, 1051 (2015)) writes the energy of an
atom as a weighted sum of kernels between its environment and ``M`` inducing environments. Here the
family's invariant features are those kernel values, ``[N, M]``, and the model's readout is linear
(``readout = "linear"``: :class:`~gnnpot.nn.readout.LinearReadout`, no hidden layer), so that with
the isolated-atom reference of :class:`~gnnpot.models.Potential`::

    E = sum_i sum_m alpha_m (k(q_i, q_m) - k(q_iso, q_m)) * scale + sum_i E0[z_i]

The weights ``alpha`` are fitted in closed form by :func:`gnnpot.training.kernel.fit_sparse_kernel`
(``gnnpot fit-kernel``), which also sets the inducing environments; gradient training (``gnnpot
fit``) would train the weights only, against whatever inducing environments the model holds.

Choices, and why:
    * **Descriptor**: Behler's symmetry functions as the ``acsf`` family builds and computes them
      (its descriptor and channels, and its method :meth:`BehlerParrinello.symmetry_functions`,
      which evaluates them from the triplets of ``prepare`` so that the compiled path traces it),
      with ``log(1 + G)`` and one-hot neighbour-element channels:
      :class:`~gnnpot.representations.acsf.NeighbourChannels` with fixed (not trained) weights,
      element ``s`` on channel ``s mod num_channels``. With ``num_channels >= num_elements`` that is
      the full descriptor, every neighbour element and element pair apart; fewer channels merge
      elements. The width ``D`` then does not depend on the element list, so every stored tensor
      has at most one element axis (fine-tuning maps it; see ``transfer_weights``).
    * **Normalisation**: the vector ``(1, x)`` is normalised to unit length. The leading 1 plays the
      part of SOAP's central-atom density: an isolated atom (``x = 0``) has the unit vector
      ``(1, 0, ...)``, so normalising is smooth everywhere, also where a first neighbour enters the
      cutoff. The functions are not scaled one by one: dividing each by its spread over the training
      atoms blows up the tails of far shells that barely reach any atom; on rMD17 ethanol (200
      training frames, M = 300) it doubled the force error (323 against 156 meV/Å).
    * **Kernel**: SOAP-GAP's polynomial of the normalised vectors, ``k = (q . q')^zeta`` (Bartók,
      Kondor and Csányi, Phys. Rev. B 87, 184115 (2013)), times 1 if the two centres are of the same
      element, else 0. All entries are >= 0, so ``0 < q . q' <= 1`` and any real ``zeta >= 1`` is
      smooth; ``k(q, q) = 1``.
    * **Inducing environments**: stored descriptors ``inducing`` [M, D] (``log(1 + G)``) and their
      centre elements as one-hot rows ``inducing_elements`` [M, S] (an element axis that fine-tuning
      can map; an index would change meaning with the element list). Until a fit sets them they are
      random, so that an untrained model is a smooth, non-trivial potential (the contract suite).

Defaults: the ``acsf`` family's grids (G1 + 8 shifted G2; G4 and G5 with 3 widths, zeta 1 and 4,
lambda +-1), 4 channels, ``zeta = 4`` and 500 inducing environments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.representations.acsf import BehlerParrinello, prepare_triplets
from gnnpot.representations.base import Representation


class SparseKernel(Representation):
    """Kernel values of each atom against ``num_inducing`` environments: ``forward(graph) -> [N, M]``.

    Args:
        num_elements: number of species.
        cutoff: neighbour radius and symmetry-function cutoff ``r_c``, Å.
        num_inducing: M, the inducing environments (the features' width).
        zeta: exponent of the polynomial kernel ``(q . q')^zeta`` (>= 1).
        num_channels: one-hot neighbour-element channels (the full descriptor when >= num_elements).
        num_radial: shifted Gaussians G2 on ``[1 Å, r_c - 0.5 Å]``, besides G1.
        num_angular: widths of the G4 and G5 functions on ``[1 Å, r_c - 0.5 Å]``.
        zetas: angular resolutions of G4 and G5 (each with lambda = +1 and -1).
    """

    tiny_hparams = {"num_inducing": 8, "num_channels": 2, "num_radial": 2, "num_angular": 2}
    readout: ClassVar[str] = "linear"  # build_model gives this family a LinearReadout: E is linear in the weights

    # The ACSF of the acsf family, from the triplets of prepare (uses self.descriptor, self.num_elements).
    symmetry_functions = BehlerParrinello.symmetry_functions

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_inducing: int = 500,
        zeta: float = 4.0,
        num_channels: int = 4,
        num_radial: int = 8,
        num_angular: int = 3,
        zetas: Sequence[float] = (1.0, 4.0),
    ) -> None:
        super().__init__(cutoff, num_inducing)
        if self.num_features < 1:
            raise ValueError(f"num_inducing must be >= 1, got {num_inducing!r}")
        if not float(zeta) >= 1.0:
            raise ValueError(f"zeta must be >= 1, got {zeta!r}")
        self.num_elements = int(num_elements)
        self.zeta = float(zeta)
        # The acsf family's descriptor and channels, without its networks.
        acsf = BehlerParrinello(
            self.num_elements,
            self.cutoff,
            num_features=1,
            hidden=(),
            num_channels=num_channels,
            num_radial=num_radial,
            num_angular=num_angular,
            zetas=zetas,
        )
        self.descriptor, self.channels = acsf.descriptor, acsf.channels
        self.channels.weight.requires_grad_(False)  # fixed one-hot channels, part of the descriptor
        sf = self.descriptor
        self.num_descriptors = self.channels.num_outputs(sf.num_g2, sf.num_g4 + sf.num_g5)
        self.register_buffer("inducing", torch.empty(self.num_features, self.num_descriptors))
        self.register_buffer("inducing_elements", torch.empty(self.num_features, self.num_elements))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """One-hot channels and random inducing environments (elements in turn)."""
        with torch.no_grad():
            channel = torch.arange(self.num_elements) % self.channels.num_channels
            self.channels.weight.copy_(torch.nn.functional.one_hot(channel, self.channels.num_channels))
            self.inducing.uniform_(0.0, 1.0)
            element = torch.arange(self.num_features) % self.num_elements
            self.inducing_elements.copy_(torch.nn.functional.one_hot(element, self.num_elements))

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """The triplets of :func:`~gnnpot.representations.acsf.prepare_triplets` (the angular functions)."""
        return prepare_triplets(data)

    def descriptors(self, graph: Data) -> Tensor:
        """``log(1 + G)`` of each atom in the channels: [N, D], >= 0; 0 for an isolated atom."""
        radial, angular = self.symmetry_functions(graph)
        return self.channels(radial.log1p(), angular.log1p())

    def environments(self, descriptors: Tensor) -> Tensor:
        """The unit vectors ``(1, x) / |(1, x)|`` [N, D + 1] of descriptors ``x`` [N, D]."""
        q = torch.cat([torch.ones_like(descriptors[:, :1]), descriptors], dim=-1)
        return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)

    def kernel(self, environments: Tensor, species: Tensor) -> Tensor:
        """``(q_i . q_m)^zeta`` [N, M] for centres of the inducing environment's element, else 0.

        Args:
            environments: [N, D + 1] unit vectors of :meth:`environments`.
            species: [N] species index of each centre.
        """
        inducing = self.environments(self.inducing.to(environments.dtype))
        same = self.inducing_elements.to(environments.dtype).T.index_select(0, species)
        return (environments @ inducing.T).pow(self.zeta) * same

    def inducing_kernel(self) -> Tensor:
        """The kernel among the inducing environments [M, M] (the sparse GP's prior covariance)."""
        q, elements = self.environments(self.inducing), self.inducing_elements
        return (q @ q.T).pow(self.zeta) * (elements @ elements.T)

    def isolated_features(self) -> Tensor:
        """The features of an isolated atom of each species [S, M] (no neighbours: ``x = 0``)."""
        zero = self.inducing.new_zeros(self.num_elements, self.num_descriptors)
        return self.kernel(self.environments(zero), torch.arange(self.num_elements, device=zero.device))

    def forward(self, graph: Data) -> Tensor:
        """Kernel values [N, M] of each atom's environment against the inducing environments."""
        return self.kernel(self.environments(self.descriptors(graph)), graph[keys.SPECIES])

    def __repr__(self) -> str:
        sf = self.descriptor
        return (
            f"{self.__class__.__name__}(num_elements={self.num_elements}, cutoff={self.cutoff}, "
            f"num_inducing={self.num_features}, zeta={self.zeta}, num_descriptors={self.num_descriptors}, "
            f"num_g2={sf.num_g2}, num_g4={sf.num_g4}, num_g5={sf.num_g5}, "
            f"num_channels={self.channels.num_channels})"
        )
