"""``build_model``: a family name and hyperparameters in, a :class:`ForceField` out."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ase.data import atomic_numbers

from gnnpot.data.checks import check_cutoff
from gnnpot.models import coulomb_krr
from gnnpot.models.forces import ForceField
from gnnpot.models.potential import Potential
from gnnpot.nn import AtomwiseReadout, ScaleShift, ZBLRepulsion
from gnnpot.nn.dispersion import D3Dispersion
from gnnpot.nn.long_range import Electrostatics, FixedCharges, LatentCharges
from gnnpot.nn.readout import LinearReadout
from gnnpot.representations import check_hparams, get_family

# Readouts by the name a family gives as its class attribute ``Representation.readout``.
READOUTS = {"mlp": AtomwiseReadout, "linear": LinearReadout}

# Long-range heads by the ``kind`` of a ``long_range`` config: where the charges come from, and the
# defaults of the Electrostatics options. Learned charges are Gaussians 1 Å wide, as in LES: a point
# charge's 1/r at bond lengths would be a large term for the local model to cancel. Fixed charges
# are point charges (a Madelung energy, a classical force field's charges).
LONG_RANGE_KINDS = {
    "ewald": (lambda num_features: LatentCharges(num_features), {"smearing": 1.0, "cutoff": 8.0, "accuracy": 1e-6}),
    "fixed_charges": (lambda num_features: FixedCharges(), {"smearing": 0.0, "cutoff": 8.0, "accuracy": 1e-6}),
}


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
    train_e0: bool = False,
    zbl: bool = False,
    long_range: Mapping[str, Any] | None = None,
    dispersion: Mapping[str, Any] | None = None,
    **hparams: Any,
) -> ForceField:
    """Build a potential with forces and stress.

    Args:
        representation: a family name from :data:`gnnpot.representations.REGISTRY`.
        cutoff: neighbour radius, Å.
        elements: the elements the model knows (symbols or atomic numbers).
        e0: per-element reference energies (eV) by symbol or atomic number; missing ones are 0.
        scale: energy scale (eV) applied to the readout, e.g. the force RMS of the data.
        train_e0: train a per-element correction to ``e0`` (:class:`~gnnpot.nn.ScaleShift`).
        zbl: add the ZBL short-range repulsion prior.
        long_range: an electrostatic head (:mod:`gnnpot.nn.long_range`), e.g. ``{"kind": "ewald"}``
            (charges learned from the features) or ``{"kind": "fixed_charges"}`` (the data's
            ``initial_charges``), with ``smearing`` (Å, Gaussian charge width), ``cutoff`` (Å, Ewald
            real space) and ``accuracy`` (see :data:`LONG_RANGE_KINDS` for the defaults); ``None``
            for a purely local model. The config records it with every option filled in.
        dispersion: a fixed DFT-D3(BJ) term (:mod:`gnnpot.nn.dispersion`), e.g. ``{"functional":
            "pbe"}``, with optional ``cutoff`` and ``cn_cutoff`` (Å); ``None`` for none.
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
    head, long_range = long_range_head(long_range, family.num_features)
    potential = Potential(
        representation=family,
        readout=READOUTS[family_class.readout](family.num_features),
        scale_shift=ScaleShift(len(numbers), shift=shift, scale=scale, train_e0=train_e0),
        elements=numbers,
        pair_repulsion=ZBLRepulsion(cutoff) if zbl else None,
        long_range=head,
        dispersion=D3Dispersion(**dispersion) if dispersion is not None else None,
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
    if train_e0:  # absent otherwise, so configs of models with fixed E0s stay as they were
        config["train_e0"] = True
    if long_range is not None:  # absent otherwise, so configs of local models stay as they were
        config["long_range"] = long_range
    if dispersion is not None:
        config["dispersion"] = dict(dispersion)
    return ForceField(potential, config=config)


def long_range_head(
    config: Mapping[str, Any] | None, num_features: int
) -> tuple[Electrostatics | None, dict[str, Any] | None]:
    """The electrostatic head a ``long_range`` config describes, and the config with every option filled in.

    Args:
        config: ``{"kind": ..., **options}`` (see :func:`build_model`), or ``None`` for no head.
        num_features: width of the family's invariant features (the input of learned charges).

    Raises:
        ValueError: an unknown kind or option.
    """
    if config is None:
        return None, None
    options = dict(config)
    kind = options.pop("kind", None)
    if kind not in LONG_RANGE_KINDS:
        raise ValueError(f"long_range kind must be one of {sorted(LONG_RANGE_KINDS)}, got {kind!r}")
    charges, defaults = LONG_RANGE_KINDS[kind]
    if unknown := sorted(set(options) - set(defaults)):
        raise ValueError(f"unknown long_range option(s) {unknown} for kind {kind!r}; accepted: {sorted(defaults)}")
    options = {name: float(options.get(name, default)) for name, default in defaults.items()}
    return Electrostatics(charges(num_features), **options), {"kind": kind, **options}


def model_from_config(config: Mapping[str, Any]) -> ForceField:
    """Rebuild a model, untrained, from its ``ForceField.config`` (see :func:`build_model`).

    A config whose ``representation`` is ``"coulomb_krr"`` describes the global kernel model
    :class:`~gnnpot.models.coulomb_krr.CoulombKRR`, which answers like a ``ForceField``.
    """
    if config["representation"] == coulomb_krr.NAME:
        return coulomb_krr.CoulombKRR.from_config(config)
    return build_model(
        config["representation"],
        cutoff=config["cutoff"],
        elements=config["elements"],
        e0=config.get("e0"),
        scale=config.get("scale", 1.0),
        train_e0=config.get("train_e0", False),
        zbl=config.get("zbl", False),
        long_range=config.get("long_range"),
        dispersion=config.get("dispersion"),
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


def transfer_weights(
    source: ForceField, target: ForceField, skip: Sequence[str] = ("potential.scale_shift.",)
) -> list[str]:
    """Copy ``source``'s trained weights into ``target``, a model of the same family and size (fine-tuning).

    ``target`` may know more elements than ``source``: a tensor with one row per element (the
    embeddings, element-dependent weights) gets the source's row of each element the source knows,
    and new elements keep their fresh initialisation. Elements are matched by atomic number, so the
    species order may differ. Tensors whose names start with one of ``skip`` are left alone (by
    default the E0 and scale buffers, which the caller sets from the new data).

    Args:
        source: the trained model.
        target: the model to initialise, built with the same family, hyperparameters and cutoff.
        skip: name prefixes of tensors not to copy.

    Returns:
        The names of the tensors that were mapped row by row (empty when the elements agree).

    Raises:
        ValueError: the families, cutoffs or hyperparameters differ, the source knows an element the
            target does not, or a tensor has no consistent element axis.
    """
    for entry in ("representation", "cutoff", "hparams", "zbl"):
        if source.config.get(entry) != target.config.get(entry):
            raise ValueError(
                f"cannot copy weights between models with different {entry}: "
                f"{source.config.get(entry)!r} and {target.config.get(entry)!r}"
            )
    old, new = list(source.config["elements"]), list(target.config["elements"])
    if missing := sorted(set(old) - set(new)):
        raise ValueError(f"the target model lacks elements {missing} that the source model knows")
    rows = torch.tensor([new.index(z) for z in old])
    weights = source.state_dict()
    blocks = _tensor_product_blocks(source, target)
    mapped = []
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            if name.startswith(tuple(skip)) or name not in weights:
                continue
            value = weights[name].to(dtype=tensor.dtype, device=tensor.device)
            if value.shape == tensor.shape and old == new:
                tensor.copy_(value)
            elif name in blocks:  # e3nn's flat weight: one block per path, an element axis in each
                for source_slice, source_shape, target_slice, target_shape, factor in blocks[name]:
                    block = value[source_slice].view(source_shape) * factor
                    _copy_rows(name, block, tensor[target_slice].view(target_shape), rows)
                mapped.append(name)
            elif _copy_rows(name, value, tensor, rows):
                mapped.append(name)
    return mapped


def _copy_rows(name: str, value: torch.Tensor, tensor: torch.Tensor, rows: torch.Tensor) -> bool:
    """Copy ``value`` into ``tensor``, row by row along the one axis that grew from ``len(rows)`` elements.

    Returns whether an element axis was mapped (``False``: the shapes agree and the tensor is
    shared by all elements, copied whole).
    """
    axes = [
        axis
        for axis in range(tensor.dim())
        if value.dim() == tensor.dim()
        and value.shape[axis] == len(rows)
        and tensor.shape[axis] != len(rows)
        and all(value.shape[a] == tensor.shape[a] for a in range(tensor.dim()) if a != axis)
    ]
    if value.shape == tensor.shape:
        tensor.copy_(value)
        return False
    if len(axes) != 1:
        raise ValueError(
            f"{name}: cannot tell which axis indexes the elements (source {tuple(value.shape)}, "
            f"target {tuple(tensor.shape)}, {len(rows)} source elements)"
        )
    tensor.index_copy_(axes[0], rows.to(tensor.device), value)
    return True


def _tensor_product_blocks(
    source: ForceField, target: ForceField
) -> dict[str, list[tuple[slice, tuple, slice, tuple, float]]]:
    """The per-path blocks of e3nn tensor products whose flat weight changed size with the elements.

    e3nn keeps a tensor product's weights as one flat vector, the paths' ``[mul_1, mul_2, mul_out]``
    blocks one after another; a species one-hot input (``num_elements x 0e``) puts an element axis
    inside each block, so the vector can only be mapped block by block. Each path is normalised by
    its fan-in, which counts the elements, so a block is rescaled by the ratio of the two paths'
    normalisations to keep the old elements' outputs as they were.
    """
    from e3nn import o3

    modules = dict(source.named_modules())
    blocks = {}
    for name, module in target.named_modules():
        other = modules.get(name)
        if not isinstance(module, o3.TensorProduct) or not isinstance(other, o3.TensorProduct):
            continue
        if not module.internal_weights or module.weight.shape == other.weight.shape:
            continue
        paths, source_start, target_start = [], 0, 0
        for source_path, target_path in zip(other.instructions, module.instructions, strict=True):
            if not target_path.has_weight:
                continue
            source_size, target_size = math.prod(source_path.path_shape), math.prod(target_path.path_shape)
            paths.append(
                (
                    slice(source_start, source_start + source_size),
                    tuple(source_path.path_shape),
                    slice(target_start, target_start + target_size),
                    tuple(target_path.path_shape),
                    source_path.path_weight / target_path.path_weight,
                )
            )
            source_start, target_start = source_start + source_size, target_start + target_size
        blocks[f"{name}.weight"] = paths
    return blocks
