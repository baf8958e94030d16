"""gnnpot: machine-learned interatomic potentials on PyTorch Geometric."""

__version__ = "0.1.0"

from gnnpot.calculators import GNNPotCalculator  # noqa: E402
from gnnpot.models import (  # noqa: E402
    ForceField,
    Potential,
    build_model,
    list_pretrained,
    load_model,
    read_metadata,
    save_model,
)
from gnnpot.representations import REGISTRY  # noqa: E402

__all__ = [
    "REGISTRY",
    "ForceField",
    "GNNPotCalculator",
    "Potential",
    "__version__",
    "build_model",
    "list_pretrained",
    "load_model",
    "read_metadata",
    "save_model",
]
