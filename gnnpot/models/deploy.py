"""A trained model as one self-contained TorchScript file (``gnnpot deploy``), for MD engines.

The file loads with ``torch.jit.load`` in a process that has torch and not gnnpot (OpenMM-Torch,
a LAMMPS pair style, a C++ program). Its module computes one structure from its neighbour list::

    energy, forces, virial = module(pos, z, cell, pbc, edge_index, edge_shift)

    pos         [N, 3] float, Å
    z           [N] int64, atomic numbers (the model's elements only)
    cell        [3, 3] float, Å, rows are lattice vectors (zeros for a molecule)
    pbc         [3] bool
    edge_index  [2, E] int64 and edge_shift [E, 3] int64: every ordered pair within the cutoff in
                the convention of :mod:`gnnpot.keys` (row 0 the centre i, row 1 the neighbour j,
                ``edge_vec = pos[j] - pos[i] + edge_shift @ cell``), no self-edge at zero shift
    energy      [] eV; forces [N, 3] eV/Å; virial [3, 3] eV

Virial sign: ``virial = -dE/d(strain)``, symmetrised, the convention of LAMMPS and NequIP (for a
molecule it equals ``sum_i r_i (x) F_i``). ASE's stress is ``-virial / volume``, i.e. the
``stress`` of :class:`~gnnpot.models.ForceField` times ``-volume``. The virial is returned for
every input; for a molecule it is the virial of the finite system.

Inputs may come in any float dtype; they are cast to the model's (float64 positions are centred
before a cast to float32, as :class:`~gnnpot.models.ForceField` does), and the outputs are in
the model's dtype. :func:`neighbour_inputs` builds the inputs from ASE ``Atoms``.

Route. TorchScript cannot compile the families (PyG ``Data``, e3nn's generated code, ``**kwargs``),
and ``torch.jit.trace`` would freeze every size. So, as :mod:`gnnpot.models.compiled` does for
``torch.compile``, :func:`~torch.fx.experimental.proxy_tensor.make_fx` traces the potential's
forward *and* the backward of :func:`~gnnpot.models.forces.energy_gradients` into one graph of
aten operations with symbolic sizes. The weights and the isolated-atom baseline are constants of
that graph (its parameters and buffers), each operation is named by its overload packet
(``aten.add``, which TorchScript resolves by itself, where the tracer wrote ``aten.add.Tensor``,
which it cannot parse), and device constants become the device of the positions, so that
``module.to("cuda")`` moves everything. :func:`torch.jit.script` then compiles the graph. The
module runs no autograd: forces and virial are part of the graph. A small scripted wrapper
(:class:`DeployedPotential`) checks the inputs, builds the triplets of angular families (DimeNet,
ACSF) and runs the graph traced for gnnpot's pair convention when the edges follow it (half the
radial work), the general graph otherwise. Every family of
:data:`~gnnpot.representations.REGISTRY` and the Coulomb-matrix KRR model (molecules only, at
most ``max_atoms`` atoms) deploy this way. TorchScript is in maintenance (``torch.jit.script``
warns that it is deprecated), but it is what the LAMMPS and OpenMM-Torch plugins load.

Metadata travel in the archive as ``_extra_files``: ``gnnpot.json`` holds all of it, and
``family``, ``elements``, ``atomic_numbers``, ``cutoff``, ``units``, ``dtype`` and
``gnnpot_version`` are also plain-text files of their own; the module has ``elements``,
``cutoff`` and ``dtype`` as attributes. Read them without gnnpot::

    files = {"gnnpot.json": ""}
    module = torch.jit.load("model.pt", _extra_files=files)
    metadata = json.loads(files["gnnpot.json"])
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import torch
import torch.fx.experimental._config as fx_config
from ase import Atoms
from ase.data import chemical_symbols
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

from gnnpot import keys
from gnnpot.data.neighbors import neighbor_list_arrays
from gnnpot.descriptors.coulomb import coulomb_matrix
from gnnpot.models.build import clone_model
from gnnpot.models.compiled import bypass
from gnnpot.models.coulomb_krr import CoulombKRR
from gnnpot.models.forces import EnergyInputs, ForceField, energy_gradients
from gnnpot.models.io import atomic_write, plain_data
from gnnpot.nn import edges_paired

METADATA_FILE: Final = "gnnpot.json"
FORMAT: Final = "gnnpot-deployed"
FORMAT_VERSION: Final = 1
DTYPES: Final = {"float32": torch.float32, "float64": torch.float64}
# The metadata entries that are also extra files of their own, as plain text.
TEXT_ENTRIES: Final = ("family", "elements", "atomic_numbers", "cutoff", "units", "dtype", "gnnpot_version")
# What a family's ``prepare`` may return: the deployed module builds these itself.
_TRIPLET_KEYS = (keys.TRIPLET_KJ, keys.TRIPLET_JI)

Model = ForceField | CoulombKRR


def deploy_model(
    model: Model, path: str | Path, dtype: torch.dtype | None = None, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` as a TorchScript file that needs torch alone (see the module docstring).

    Args:
        model: a :class:`ForceField` of any family, or a :class:`CoulombKRR`; it is not changed.
        path: the file to write (``.pt`` by convention); written atomically.
        dtype: ``torch.float32`` or ``torch.float64``; default: the model's own.
        metadata: the model file's metadata (``load_model(...).metadata``: test metrics, training
            data hash, ...), kept under ``"model"`` in ``gnnpot.json``.

    Returns:
        ``path``.
    """
    module, info = deployed_module(model, dtype, metadata)
    files = extra_files(info)
    return atomic_write(path, lambda handle: torch.jit.save(module, handle, _extra_files=files))


def load_deployed(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The deployed module of ``path`` and its metadata (what a torch-only reader does, as a function)."""
    files = {METADATA_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return module, json.loads(files[METADATA_FILE])


def deployed_module(
    model: Model, dtype: torch.dtype | None = None, metadata: Mapping[str, Any] | None = None
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The scripted module of ``model`` (on the CPU) and its metadata; see :func:`deploy_model`.

    Raises:
        ValueError: a dtype other than float32/float64, a family whose ``prepare`` returns
            tensors the module cannot build (anything but triplets), or a long-range head or
            dispersion term (:attr:`Potential.direct_geometry <gnnpot.models.Potential.direct_geometry>`).
        TypeError: ``model`` is neither a :class:`ForceField` nor a :class:`CoulombKRR`.
    """
    if not isinstance(model, ForceField | CoulombKRR):
        raise TypeError(f"expected a ForceField or a CoulombKRR, got {type(model).__name__}")
    if isinstance(model, ForceField) and model.potential.direct_geometry:
        # as for the compiled path: their pair lists, k-vectors and per-frame loops change with every input
        raise ValueError(
            "cannot deploy a model with a long-range head or dispersion (long_range, dispersion): "
            "their pair lists and k-vectors are built in Python for each input, not inside the module"
        )
    own = model.alpha.dtype if isinstance(model, CoulombKRR) else model.potential.scale_shift.scale.dtype
    dtype = dtype or own
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    # a copy, so that the caller's model keeps its dtype, device and requires_grad
    frozen = copy.deepcopy(model) if isinstance(model, CoulombKRR) else clone_model(model)
    frozen = frozen.to(device="cpu", dtype=dtype).eval().enable_compile(False)
    example = _example_inputs(frozen.elements, frozen.cutoff, dtype)
    if isinstance(frozen, CoulombKRR):
        paired = unpaired = _trace(_CoulombKRRGradients(frozen), example)
        triplets, max_atoms = False, frozen.descriptor.max_atoms
    else:
        triplets, max_atoms = _needs_triplets(frozen), -1
        baseline = frozen.potential.isolated_readout(example[0]).detach()
        paired = _trace(_PotentialGradients(frozen.potential, baseline, True, triplets), example)
        unpaired = _trace(_PotentialGradients(frozen.potential, baseline, False, triplets), example)
    wrapper = DeployedPotential(paired, unpaired, frozen.elements, frozen.cutoff, dtype, triplets, max_atoms)
    return torch.jit.script(wrapper), deployment_metadata(frozen, dtype, metadata)


def deployment_metadata(model: Model, dtype: torch.dtype, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``gnnpot.json`` holds: format, versions, family, elements, cutoff, units, dtype, I/O.

    Args:
        model: the deployed model.
        dtype: the deployed dtype.
        metadata: the model file's own metadata, kept under ``"model"``.
    """
    from gnnpot import __version__

    config = model.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gnnpot_version": __version__,
        "torch_version": torch.__version__,
        "family": config["representation"],
        "elements": [chemical_symbols[z] for z in model.elements],
        "atomic_numbers": list(model.elements),
        "cutoff": float(model.cutoff),
        "units": {**keys.UNITS, "virial": "eV"},
        "dtype": str(dtype).removeprefix("torch."),
        "periodic": not isinstance(model, CoulombKRR),
        "max_atoms": model.descriptor.max_atoms if isinstance(model, CoulombKRR) else None,
        "inputs": [
            "pos [N, 3] float, Å",
            "z [N] int64, atomic numbers",
            "cell [3, 3] float, Å, rows are lattice vectors",
            "pbc [3] bool",
            "edge_index [2, E] int64, row 0 centre i, row 1 neighbour j, all ordered pairs within cutoff",
            "edge_shift [E, 3] int64, edge_vec = pos[j] - pos[i] + edge_shift @ cell",
        ],
        "outputs": ["energy [] eV", "forces [N, 3] eV/Å", "virial [3, 3] eV"],
        "virial_sign": "virial = -dE/d(strain), symmetric; ASE stress = -virial / volume",
        "model": plain_data(dict(metadata or {})),
    }


def extra_files(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The ``_extra_files`` of the archive: ``gnnpot.json`` and the :data:`TEXT_ENTRIES` as plain text.

    Lists are written space-separated (``"H C O"``), mappings as JSON, the rest with ``str``.
    """
    files = {METADATA_FILE: json.dumps(plain_data(dict(metadata)), indent=2, ensure_ascii=False)}
    for name in TEXT_ENTRIES:
        value = metadata[name]
        if isinstance(value, Mapping):
            files[name] = json.dumps(dict(value), ensure_ascii=False)
        elif isinstance(value, list | tuple):
            files[name] = " ".join(str(item) for item in value)
        else:
            files[name] = str(value)
    return files


def neighbour_inputs(
    atoms: Atoms, cutoff: float, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The inputs of a deployed module for ``atoms``, with gnnpot's neighbour list.

    Args:
        atoms: the structure, positions in Å.
        cutoff: neighbour radius, Å (the ``cutoff`` of the deployed metadata).
        dtype: float dtype of positions and cell.

    Returns:
        ``(pos [N, 3], z [N], cell [3, 3], pbc [3], edge_index [2, E], edge_shift [E, 3])``; the
        edges follow the pair convention of :mod:`gnnpot.keys`, so the module takes its faster graph.
    """
    pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    i, j, shifts = neighbor_list_arrays(pos, cell, pbc, cutoff)
    return (
        torch.as_tensor(pos, dtype=dtype),
        torch.as_tensor(atoms.numbers, dtype=torch.long),
        torch.as_tensor(cell, dtype=dtype),
        torch.as_tensor(pbc, dtype=torch.bool),
        torch.stack([torch.as_tensor(i), torch.as_tensor(j)]).long(),
        torch.as_tensor(shifts, dtype=torch.long),
    )


# --- the scripted wrapper ---------------------------------------------------------------------


class DeployedPotential(nn.Module):
    """The module of a deployed file: checks, triplets, then one of two traced graphs.

    Args:
        paired: the graph (``forward(pos, cell, z, species, edge_index, edge_shift, triplet_kj,
            triplet_ji) -> (energy, forces, virial)``) for edges in gnnpot's pair convention.
        unpaired: the same for any edge order.
        elements: atomic numbers the model knows, in the order of the species index.
        cutoff: neighbour radius, Å.
        dtype: the model's float dtype.
        triplets: build the triplets of :mod:`gnnpot.keys` for the graph (angular families).
        max_atoms: a model for molecules of at most this many atoms (refuses periodic input);
            -1 for none.
    """

    def __init__(
        self,
        paired: nn.Module,
        unpaired: nn.Module,
        elements: list[int],
        cutoff: float,
        dtype: torch.dtype,
        triplets: bool,
        max_atoms: int,
    ) -> None:
        super().__init__()
        self.paired = paired
        self.unpaired = unpaired
        self.elements = [int(z) for z in elements]
        self.cutoff = float(cutoff)
        self.dtype = dtype
        self.triplets = bool(triplets)
        self.max_atoms = int(max_atoms)
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("species_table", table)

    def forward(
        self, pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, edge_index: Tensor, edge_shift: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Energy [] (eV), forces [N, 3] (eV/Å) and virial [3, 3] (eV) of one structure.

        See the module docstring of :mod:`gnnpot.models.deploy` for the inputs and the virial sign.
        """
        num_atoms = pos.shape[0]
        _check_inputs(pos, z, cell, pbc, edge_index, edge_shift)
        species = self.species_table[z.clamp(0, 118)]
        if bool((species < 0).any()):
            unknown: list[int] = torch.unique(z[species < 0]).tolist()
            raise ValueError(f"the model knows atomic numbers {self.elements}, got {unknown}")
        if self.max_atoms >= 0:
            if bool(pbc.any()):
                raise ValueError("this model is defined for molecules only; got a periodic structure")
            if num_atoms > self.max_atoms:
                raise ValueError(f"this model takes at most {self.max_atoms} atoms, got {num_atoms}")
        if pos.dtype == torch.float64 and self.dtype == torch.float32 and num_atoms > 0:
            pos = pos - pos.mean(0)  # float32 keeps the digits of bond lengths, not of far-off coordinates
        pos, cell = pos.to(self.dtype), cell.to(self.dtype)
        if self.triplets:
            triplet_kj, triplet_ji = _triplets(edge_index, edge_shift, num_atoms)
        else:
            triplet_kj = triplet_ji = torch.zeros(0, dtype=torch.long, device=pos.device)
        if edges_paired(edge_index, edge_shift):
            return self.paired(pos, cell, z, species, edge_index, edge_shift, triplet_kj, triplet_ji)
        return self.unpaired(pos, cell, z, species, edge_index, edge_shift, triplet_kj, triplet_ji)


def _check_inputs(pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, edge_index: Tensor, edge_shift: Tensor) -> None:
    """Shapes and dtypes of the deployed module's inputs; ``ValueError`` naming the first that is wrong."""
    num_atoms, num_edges = pos.shape[0], edge_index.shape[-1]
    if pos.dim() != 2 or pos.shape[1] != 3 or not pos.is_floating_point():
        raise ValueError(f"pos must be a float tensor [N, 3], got {pos.dtype} {pos.shape}")
    if z.dim() != 1 or z.shape[0] != num_atoms or z.dtype != torch.long:
        raise ValueError(f"z must be int64 [{num_atoms}], got {z.dtype} {z.shape}")
    if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3 or not cell.is_floating_point():
        raise ValueError(f"cell must be a float tensor [3, 3], got {cell.dtype} {cell.shape}")
    if pbc.dim() != 1 or pbc.shape[0] != 3 or pbc.dtype != torch.bool:
        raise ValueError(f"pbc must be bool [3], got {pbc.dtype} {pbc.shape}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise ValueError(f"edge_index must be int64 [2, E], got {edge_index.dtype} {edge_index.shape}")
    shift_ok = edge_shift.dim() == 2 and edge_shift.shape[0] == num_edges and edge_shift.shape[1] == 3
    if not shift_ok or edge_shift.dtype != torch.long:
        raise ValueError(f"edge_shift must be int64 [{num_edges}, 3], got {edge_shift.dtype} {edge_shift.shape}")
    if num_edges > 0 and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_atoms):
        raise ValueError(f"edge_index must index atoms 0..{num_atoms - 1}")


def _triplets(edge_index: Tensor, edge_shift: Tensor, num_atoms: int) -> tuple[Tensor, Tensor]:
    """:func:`gnnpot.nn.triplets.build_triplets` in TorchScript: the same steps, without its shape checks.

    ``build_triplets`` formats its errors with ``tuple(tensor.shape)``, which TorchScript cannot
    compile; :func:`_check_inputs` has checked the shapes here.
    """
    centre, neighbour = edge_index[0], edge_index[1]
    order = torch.argsort(centre, stable=True)
    degree = torch.bincount(centre, minlength=num_atoms)
    start = torch.cumsum(degree, 0) - degree
    count = degree[neighbour]
    num_candidates = int(count.sum())
    edges = torch.arange(centre.numel(), device=edge_index.device)
    triplet_ji = torch.repeat_interleave(edges, count, output_size=num_candidates)
    first = torch.cumsum(count, 0) - count
    rank = torch.arange(num_candidates, device=edge_index.device) - first[triplet_ji]
    triplet_kj = order[start[neighbour[triplet_ji]] + rank]
    straight_back = (neighbour[triplet_kj] == centre[triplet_ji]) & (
        edge_shift[triplet_kj] == -edge_shift[triplet_ji]
    ).all(dim=-1)
    keep = ~straight_back
    return triplet_kj[keep], triplet_ji[keep]


# --- the functions that are traced --------------------------------------------------------------


class _PotentialGradients(nn.Module):
    """Energy, forces and virial of one structure from a :class:`~gnnpot.models.Potential`.

    Args:
        potential: the model's potential, in eval mode.
        baseline: its :meth:`~gnnpot.models.Potential.isolated_readout` [num_elements].
        paired: trace the path for edges in gnnpot's pair convention.
        triplets: the family takes triplets (its ``prepare`` returns them).
    """

    def __init__(self, potential: nn.Module, baseline: Tensor, paired: bool, triplets: bool) -> None:
        super().__init__()
        self.potential = potential
        self.register_buffer("baseline", baseline)
        self.paired = paired
        self.triplets = triplets

    def forward(
        self,
        pos: Tensor,
        cell: Tensor,
        z: Tensor,
        species: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        triplet_kj: Tensor,
        triplet_ji: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(energy [], forces [N, 3], virial [3, 3])``, the virial = -dE/d(strain), symmetrised."""
        prepared = {keys.TRIPLET_KJ: triplet_kj, keys.TRIPLET_JI: triplet_ji} if self.triplets else {}
        inputs = EnergyInputs(
            pos, cell.unsqueeze(0), z, species, edge_index, edge_shift, torch.zeros_like(z), prepared, self.paired
        )
        atomic, forces, virial = energy_gradients(self.potential, inputs, self.baseline, True, False)
        # energy_gradients books sum_e r_e (x) dE/dr_e = dE/d(strain) on the atoms
        return atomic.sum(), forces, -_symmetric(virial.sum(0))


class _CoulombKRRGradients(nn.Module):
    """Energy, forces and virial of one molecule from a :class:`CoulombKRR`.

    :meth:`CoulombKRR.forward` groups a batch by molecule size (data-dependent Python), which a
    tracer cannot follow; one molecule needs none of it. The steps are those of
    :class:`~gnnpot.descriptors.CoulombMatrixEigenvalues` and :meth:`CoulombKRR.forward`.
    """

    def __init__(self, model: CoulombKRR) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        pos: Tensor,
        cell: Tensor,
        z: Tensor,
        species: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        triplet_kj: Tensor,
        triplet_ji: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(energy [], forces [N, 3], virial [3, 3])``; cell, edges and triplets are not used."""
        num_atoms = pos.shape[0]
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            eigenvalues = torch.linalg.eigvalsh(coulomb_matrix(z.unsqueeze(0), pos.unsqueeze(0)))[0].flip(-1)
            padding = eigenvalues.new_zeros(self.model.descriptor.max_atoms - num_atoms)
            learned = self.model.kernel_energy(torch.cat([eigenvalues, padding]).unsqueeze(0))
            (grad,) = torch.autograd.grad(learned.sum(), [pos])
        atomic = self.model.scale_shift((learned / num_atoms).expand(num_atoms), species)
        return atomic.sum(), -grad, -_symmetric(pos.detach().T @ grad)


def _symmetric(matrix: Tensor) -> Tensor:
    return 0.5 * (matrix + matrix.transpose(-1, -2))


def _needs_triplets(model: ForceField) -> bool:
    """Whether the family's ``prepare`` gives triplets; ``ValueError`` when it gives anything else."""
    from gnnpot.representations import isolated_graph

    prepared = set(model.potential.representation.prepare(isolated_graph(model.potential.element_numbers)))
    if not prepared <= set(_TRIPLET_KEYS):
        family = model.config.get("representation", type(model.potential.representation).__name__)
        raise ValueError(
            f"cannot deploy family {family!r}: its prepare() gives {sorted(prepared)}, and the deployed "
            f"module can build only the triplets {list(_TRIPLET_KEYS)}"
        )
    return bool(prepared)


def _example_inputs(elements: list[int], cutoff: float, dtype: torch.dtype) -> list[Tensor]:
    """Inputs to trace with: four atoms within the cutoff, all 12 edges paired, 24 triplets.

    Every size is at least 2, since the tracer specialises sizes 0 and 1; the graph it gives
    serves every size (the tests check one atom, no edges and no triplets).
    """
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.1, 1.1, 0.2], [0.2, 0.3, 1.2]], dtype=torch.float64)
    pos = (pos * 0.4 * cutoff).to(dtype)
    z = torch.tensor([elements[k % len(elements)] for k in range(4)])
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    edge_index = torch.tensor([edge for i, j in pairs for edge in ((i, j), (j, i))]).T.contiguous()
    edge_shift = torch.zeros(edge_index.shape[1], 3, dtype=torch.long)
    species = torch.tensor([k % len(elements) for k in range(4)])
    triplet_kj, triplet_ji = _triplets(edge_index, edge_shift, 4)
    cell = torch.zeros(3, 3, dtype=dtype)
    return [pos, cell, z, species, edge_index, edge_shift, triplet_kj, triplet_ji]


def _trace(module: nn.Module, example: list[Tensor]) -> torch.fx.GraphModule:
    """``module``'s forward as one aten graph with symbolic sizes and its weights as constants, for TorchScript.

    The weights enter as constants, not as inputs (as :mod:`gnnpot.models.compiled` has them): an
    input's every size becomes a symbol, and the symbolic arithmetic over the weights' sizes made
    tracing three times slower.
    """
    for weight in module.parameters():  # deploy's own copy; a weight wanting a gradient adds its backward
        weight.requires_grad_(False)
    # Without duck sizing, sizes equal in the example (atoms and edges, say) stay separate symbols.
    with fx_config.patch(use_duck_shape=False):
        graph = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    # gnnpot.nn.materialize is a layout hint for TorchInductor, an operator of gnnpot's Python
    # library that the C++ loaders (LAMMPS, OpenMM-Torch) do not have: TorchScript gets its input.
    bypass(graph, torch.ops.gnnpot.materialize.default)
    _trim_backward(graph)
    _make_scriptable(graph)
    return graph


def _trim_backward(graph: torch.fx.GraphModule) -> None:
    """Remove two costs that the tracer adds to the backward and eager autograd does not pay.

    * A full slice (the ``:`` of ``x[:, a:b]``) on a symbolic size stays a ``slice`` in the
      graph, and its backward ``slice_backward`` copies the whole gradient into fresh zeros,
      where eager autograd sees no slice at all. It is the identity, and is dropped.
    * Autograd sums the gradients of a tensor used twice in place; the tracer records ``add``
      and ``index_add`` out of place. Where an operand is a fresh tensor that nothing else
      uses, the sum goes into it.

    MACE on 32 Cu atoms has 41 such slices and 115 such sums: without this its deployed module
    was 20 % slower than eager, with it they are even. A node that the graph mutates, directly
    or through a view, is left alone, so that no reader sees a changed tensor.
    """
    aten = torch.ops.aten
    mutated = _mutated(graph.graph.nodes)
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is aten.slice_backward.default:
            grad, _, _, start, end, step = node.args
            full = start == 0 and step == 1 and isinstance(end, int) and end >= 2**62
            if full and not _touched(grad, mutated) and node not in mutated:
                node.replace_all_uses_with(grad)
                graph.graph.erase_node(node)
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.kwargs or node.target not in (aten.add.Tensor, aten.index_add.default):
            continue
        for position in (0, 1) if node.target is aten.add.Tensor else (0,):
            if _private(node.args[position], node):
                if node.target is aten.add.Tensor:  # a + b == b + a exactly
                    node.args = (node.args[position], node.args[1 - position])
                    node.target = aten.add_.Tensor
                else:
                    node.target = aten.index_add_.default
                break
    graph.graph.lint()
    graph.recompile()


def _mutated(nodes: Iterable[torch.fx.Node]) -> set[torch.fx.Node]:
    """The nodes whose tensors an in-place operation of the graph changes, and the bases of their views."""
    mutated = set()
    for node in nodes:
        if _mutates(node):
            base = node.args[0]
            while isinstance(base, torch.fx.Node):
                mutated.add(base)
                base = base.args[0] if _aliases(base) else None
    return mutated


def _touched(node: torch.fx.Node, mutated: set[torch.fx.Node]) -> bool:
    """Whether ``node``'s memory is written by the graph: it, or a tensor it is a view of, is mutated."""
    while isinstance(node, torch.fx.Node):
        if node in mutated:
            return True
        node = node.args[0] if _aliases(node) else None
    return False


def _private(operand: Any, user: torch.fx.Node) -> bool:
    """Whether ``user`` may write its result into ``operand``: a fresh tensor of its size that nothing else uses."""
    if not isinstance(operand, torch.fx.Node) or operand.op != "call_function" or len(operand.users) != 1:
        return False
    if not isinstance(operand.target, torch._ops.OpOverload) or operand.target is torch.ops.aten._unsafe_view.default:
        return False  # _unsafe_view aliases its input without saying so in its schema
    if _aliases(operand) or _mutates(operand):
        return False
    mine, result = operand.meta.get("val"), user.meta.get("val")
    if not isinstance(mine, Tensor) or not isinstance(result, Tensor) or mine.dtype != result.dtype:
        return False
    return [str(size) for size in mine.shape] == [str(size) for size in result.shape]


def _aliases(node: torch.fx.Node) -> bool:
    """Whether the node's output may share memory with an input (a view, or an in-place op's result)."""
    schema = _schema(node)
    return schema is not None and any(value.alias_info is not None for value in schema.returns)


def _mutates(node: torch.fx.Node) -> bool:
    """Whether the node writes into one of its inputs."""
    schema = _schema(node)
    return schema is not None and any(value.alias_info and value.alias_info.is_write for value in schema.arguments)


def _schema(node: torch.fx.Node) -> torch.FunctionSchema | None:
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    return node.target._schema


def _make_scriptable(graph: torch.fx.GraphModule) -> None:
    """Rewrite what TorchScript cannot compile or what would pin the graph to the CPU.

    * ``aten.op.overload`` -> ``aten.op``: TorchScript picks the overload by the arguments' types.
    * ``aten.sym_size.int`` -> ``aten.size``: a symbolic size is an ``int`` at run time.
    * a ``device=cpu`` argument -> the device of the first input (the positions).
    """
    first_input = next(node for node in graph.graph.nodes if node.op == "placeholder")
    with graph.graph.inserting_after(first_input):
        device = graph.graph.call_function(_device_of, (first_input,))
    for node in graph.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if node.target is torch.ops.aten.sym_size.int:
            node.target = torch.ops.aten.size
        else:
            node.target = node.target.overloadpacket
        if isinstance(node.kwargs.get("device"), torch.device):
            node.kwargs = {**node.kwargs, "device": device}
    graph.graph.lint()
    graph.recompile()


def _device_of(tensor: Tensor) -> torch.device:
    """The device of ``tensor`` (a graph node, called from the traced graph)."""
    return tensor.device
