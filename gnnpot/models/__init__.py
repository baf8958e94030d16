"""The energy model, the forces/stress wrapper and ``build_model``."""

from gnnpot.models.build import build_model, to_atomic_numbers
from gnnpot.models.potential import ForceField, Potential

__all__ = ["ForceField", "Potential", "build_model", "to_atomic_numbers"]
