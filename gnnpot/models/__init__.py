"""The energy model, the forces/stress wrapper and ``build_model``."""

from gnnpot.models.build import build_model, model_from_config, to_atomic_numbers
from gnnpot.models.potential import ForceField, Potential

__all__ = ["ForceField", "Potential", "build_model", "model_from_config", "to_atomic_numbers"]
