"""gnnpot: machine-learned interatomic potentials on PyTorch Geometric."""

__version__ = "0.1.0"

from gnnpot.calculators import GNNPotCalculator
from gnnpot.calculators.predict import predict
from gnnpot.models import (
    ForceField,
    Potential,
    build_model,
    list_pretrained,
    load_model,
    read_metadata,
    save_model,
)
from gnnpot.representations import REGISTRY

__all__ = [
    "REGISTRY",
    "ForceField",
    "GNNPotCalculator",
    "Potential",
    "__version__",
    "build_model",
    "list_pretrained",
    "load_model",
    "predict",
    "read_metadata",
    "save_model",
]
