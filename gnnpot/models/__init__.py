"""The energy model, the forces/stress wrapper, ``build_model`` and model files."""

from gnnpot.models.build import build_model, clone_model, model_from_config, to_atomic_numbers
from gnnpot.models.forces import ForceField
from gnnpot.models.io import load_model, read_metadata, save_model
from gnnpot.models.potential import Potential
from gnnpot.models.pretrained import list_pretrained

__all__ = [
    "ForceField",
    "Potential",
    "build_model",
    "clone_model",
    "list_pretrained",
    "load_model",
    "model_from_config",
    "read_metadata",
    "save_model",
    "to_atomic_numbers",
]
