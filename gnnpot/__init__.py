"""gnnpot: machine-learned interatomic potentials on PyTorch Geometric."""

__version__ = "0.1.0"

from gnnpot.calculators import GNNPotCalculator  # noqa: E402
from gnnpot.models import ForceField, Potential, build_model  # noqa: E402
from gnnpot.representations import REGISTRY  # noqa: E402

__all__ = ["REGISTRY", "ForceField", "GNNPotCalculator", "Potential", "__version__", "build_model"]
