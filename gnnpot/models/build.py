"""``build_model``: a family name and hyperparameters in, a :class:`ForceField` out."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ase.data import atomic_numbers

from gnnpot.data.checks import check_cutoff
from gnnpot.models.forces import ForceField
from gnnpot.models.potential import Potential
from gnnpot.nn import AtomwiseReadout, ScaleShift, ZBLRepulsion
from gnnpot.representations import check_hparams, get_family


def to_atomic_numbers(elements: Sequence[str | int]) -> list[int]:
    """Element symbols or numbers to sorted, unique atomic numbers."""
    numbers = set()
    for element in elements:
        if isinstance(element, str):
            if element not in atomic_numbers:
                raise ValueError(f"unknown element symbol {element!r}")
            numbers.add(atomic_numbers[element])
        else:
            number = int(element)
            if not 0 < number < 119:
                raise ValueError(f"atomic number must be in 1..118, got {element!r}")
            numbers.add(number)
    if not numbers:
        raise ValueError("elements must name at least one element")
    return sorted(numbers)


def build_model(
    representation: str,
    *,
    cutoff: float,
    elements: Sequence[str | int],
    e0: Mapping[str | int, float] | None = None,
    scale: float = 1.0,
    zbl: bool = False,
    **hparams: Any,
) -> ForceField:
    """Build a potential with forces and stress.

    Args:
        representation: a family name from :data:`gnnpot.representations.REGISTRY`.
        cutoff: neighbour radius, Å.
        elements: the elements the model knows (symbols or atomic numbers).
        e0: per-element reference energies (eV) by symbol or atomic number; missing ones are 0.
        scale: energy scale (eV) applied to the readout, e.g. the force RMS of the data.
        zbl: add the ZBL short-range repulsion prior.
        **hparams: the family's hyperparameters (``num_features``, ``num_interactions``, ...).
    """
    family_class = get_family(representation)
    check_hparams(representation, hparams)
    cutoff = check_cutoff(cutoff)
    numbers = to_atomic_numbers(elements)
    shift = [0.0] * len(numbers)
    for key, value in (e0 or {}).items():
        number = to_atomic_numbers([key])[0]
        if number not in numbers:
            raise ValueError(f"e0 given for element {key!r}, which is not in elements")
        shift[numbers.index(number)] = float(value)
    family = family_class(num_elements=len(numbers), cutoff=cutoff, **hparams)
    potential = Potential(
        representation=family,
        readout=AtomwiseReadout(family.num_features),
        scale_shift=ScaleShift(len(numbers), shift=shift, scale=scale),
        elements=numbers,
        pair_repulsion=ZBLRepulsion(cutoff) if zbl else None,
    )
    config = {
        "representation": representation,
        "cutoff": cutoff,
        "elements": numbers,
        "e0": dict(zip(numbers, shift)),
        "scale": float(scale),
        "zbl": bool(zbl),
        "hparams": dict(hparams),
    }
    return ForceField(potential, config=config)


def model_from_config(config: Mapping[str, Any]) -> ForceField:
    """Rebuild a model, untrained, from its ``ForceField.config`` (see :func:`build_model`)."""
    return build_model(
        config["representation"],
        cutoff=config["cutoff"],
        elements=config["elements"],
        e0=config.get("e0"),
        scale=config.get("scale", 1.0),
        zbl=config.get("zbl", False),
        **config.get("hparams", {}),
    )


def clone_model(model: ForceField) -> ForceField:
    """A copy of ``model`` with the same weights, device and dtype.

    A model with a config is rebuilt from it rather than deep-copied: deep-copying e3nn's compiled
    tensor products (torch.fx) turns their constants into extra buffers, so the copy's state dict
    would no longer match a freshly built model's.
    """
    if not model.config:
        return copy.deepcopy(model)  # keeps ``compiled``; compiled functions are not copied
    fresh = model_from_config(model.config)
    wanted = fresh.state_dict().keys()
    # A deep-copied e3nn model carries extra constant buffers; every tensor the fresh model has must match.
    load_weights(fresh, {k: v for k, v in model.state_dict().items() if k in wanted})
    return fresh.train(model.training).enable_compile(model.compiled)


def load_weights(model: ForceField, state_dict: Mapping[str, Any]) -> ForceField:
    """Load ``state_dict`` strictly, after moving ``model`` to the device and float dtype of its weights.

    A model built from its config has the default dtype (float32); loading float64 weights into it
    first would round them to float32. The dtype is read from the parameters (buffers such as the
    float64 E0s keep their own dtype).

    Args:
        model: a freshly built model of the same config.
        state_dict: its weights by name.

    Returns:
        ``model``, in the weights' dtype and on their device.
    """
    names = {name for name, _ in model.named_parameters()}
    weight = next((value for name, value in state_dict.items() if name in names and value.is_floating_point()), None)
    if weight is not None:
        model = model.to(device=weight.device, dtype=weight.dtype)
    model.load_state_dict(state_dict, strict=True)
    return model
