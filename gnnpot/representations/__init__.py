"""The layer families. Each maps a graph to invariant per-atom features [N, num_features].

``REGISTRY`` is the single list of families: it drives ``build_model``, configs, checkpoint
metadata and the contract test matrix.
"""

from gnnpot.representations.dimenet import DimeNetPlusPlus
from gnnpot.representations.nequip import NequIP
from gnnpot.representations.painn import PaiNN
from gnnpot.representations.schnet import SchNet

REGISTRY = {
    "schnet": SchNet,
    "dimenet": DimeNetPlusPlus,
    "painn": PaiNN,
    "nequip": NequIP,
}

__all__ = ["REGISTRY", "DimeNetPlusPlus", "NequIP", "PaiNN", "SchNet"]
