"""Family-agnostic building blocks: radial bases, cutoffs, geometry, readout, ZBL."""

from gnnpot.nn.geometry import edge_vectors
from gnnpot.nn.pairs import edges_paired, pair_expand, pair_lengths, pair_mul
from gnnpot.nn.radial import BesselRBF, CosineCutoff, GaussianRBF, PolynomialCutoff
from gnnpot.nn.readout import AtomwiseReadout, ScaleShift
from gnnpot.nn.scatter import gather, materialize, scatter_sum
from gnnpot.nn.zbl import ZBLRepulsion

__all__ = [
    "AtomwiseReadout",
    "BesselRBF",
    "CosineCutoff",
    "GaussianRBF",
    "PolynomialCutoff",
    "ScaleShift",
    "ZBLRepulsion",
    "edge_vectors",
    "edges_paired",
    "gather",
    "materialize",
    "pair_expand",
    "pair_lengths",
    "pair_mul",
    "scatter_sum",
]
