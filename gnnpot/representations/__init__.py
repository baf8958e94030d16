"""The layer families. Each maps a graph to invariant per-atom features [N, num_features].

``REGISTRY`` is the single list of families: it drives ``build_model``, configs, checkpoint
metadata, the contract suite, the compiled checks and the benchmark's rows.

Adding a family:
    1. Write ``gnnpot/representations/<name>.py`` with one public class that subclasses
       :class:`~gnnpot.representations.base.Representation`: ``__init__(num_elements, cutoff, ...)``
       with its hyperparameters as typed keyword arguments, ``forward(graph) -> [N, num_features]``,
       ``prepare(data)`` if it needs index work on the data (triplets), ``tiny_hparams``, and
       ``data_statistics`` if a hyperparameter comes from the training data.
    2. Add one line to ``REGISTRY`` below.
    3. Add ``configs/<name>_demo.yaml`` and, for a paper setting, ``configs/<name>_rmd17.yaml``.

    The contract suite (``tests/test_contract.py``), the compiled-equals-eager checks
    (``tests/models/test_compiled.py``) and the benchmark (``benchmarks/``) then include it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gnnpot.representations.acsf import BehlerParrinello
from gnnpot.representations.base import Representation, family_graph, isolated_graph
from gnnpot.representations.dimenet import DimeNetPlusPlus
from gnnpot.representations.hist import HistogramMLP
from gnnpot.representations.kernel import SparseKernel
from gnnpot.representations.mace import MACE
from gnnpot.representations.nequip import NequIP
from gnnpot.representations.painn import PaiNN
from gnnpot.representations.schnet import SchNet

REGISTRY: dict[str, type[Representation]] = {
    "schnet": SchNet,
    "dimenet": DimeNetPlusPlus,
    "painn": PaiNN,
    "nequip": NequIP,
    "mace": MACE,
    "acsf": BehlerParrinello,
    "hist": HistogramMLP,
    "kernel": SparseKernel,
}


def get_family(name: str) -> type[Representation]:
    """The family class registered as ``name``; ``ValueError`` naming the choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown representation {name!r}; choose from {sorted(REGISTRY)}")
    return REGISTRY[name]


def check_hparams(name: str, hparams: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the accepted hyperparameters when ``hparams`` has an unknown one."""
    accepted = get_family(name).hparam_names()
    unknown = [key for key in hparams if key not in accepted]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(
            f"unknown hyperparameter{plural} {', '.join(repr(k) for k in unknown)} for {name}; "
            f"accepted: {', '.join(accepted)}"
        )


__all__ = [
    "REGISTRY",
    "BehlerParrinello",
    "DimeNetPlusPlus",
    "HistogramMLP",
    "MACE",
    "NequIP",
    "PaiNN",
    "Representation",
    "SchNet",
    "SparseKernel",
    "check_hparams",
    "family_graph",
    "get_family",
    "isolated_graph",
]
