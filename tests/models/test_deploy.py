"""``gnnpot deploy``: the TorchScript file computes what the Python model computes, with torch alone.

Every family, and the Coulomb-matrix KRR model, is deployed from a tiny random model, written,
read back and compared with :class:`~gnnpot.models.ForceField` on a molecule and on a periodic
cell smaller than twice the cutoff (each atom sees several images of the others and of itself),
through both of the module's graphs (edges in gnnpot's pair order, and shuffled). Deploying
traces the model, 2-20 s a family on two cores; float64 runs by default for the families that
trace fast and float32 for SchNet, the rest with ``-m slow``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from gnnpot import REGISTRY, build_model, load_model, testing
from gnnpot.cli import main
from gnnpot.data import AtomicData
from gnnpot.models.coulomb_krr import CoulombKRR
from gnnpot.models.deploy import deploy_model, load_deployed, neighbour_inputs

ELEMENTS = ["H", "C", "O", "Cu", "Au"]
E0 = {1: -13.6, 6: -1030.5, 8: -2040.1, 29: -1.3, 79: -0.7}
CUTOFF = 4.0
# float32: the deployed graph sums in another order than the eager model, and atoms shuffled reorder
# the edges; NequIP's forces differed by 1.2e-5 of the largest (float64 is the exact check).
RTOL = {torch.float64: 1e-10, torch.float32: 3e-5}
# The virial sums r (x) dE/dr over every edge, terms that mostly cancel: float32 rounding of the
# terms is ~1e-5 of the small sum (measured 2e-5 for NequIP and the histogram family).
VIRIAL_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}
SLOW_TRACES = {"mace", "nequip"}  # 15-20 s a deploy here
FLOAT32_DEFAULT = {"schnet"}


def case(name: str, dtype: torch.dtype):
    fast = name not in SLOW_TRACES and (dtype == torch.float64 or name in FLOAT32_DEFAULT)
    return pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}", marks=() if fast else pytest.mark.slow)


CASES = [case(name, dtype) for name in sorted(REGISTRY) for dtype in (torch.float64, torch.float32)]
FLOAT64_FAMILIES = [pytest.param(n, marks=pytest.mark.slow if n in SLOW_TRACES else ()) for n in sorted(REGISTRY)]
_DEPLOYED: dict = {}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """``deployed(name, dtype) -> (model, module, path)``: each model deployed, written and read back once."""

    def get(name: str, dtype: torch.dtype):
        if (name, dtype) not in _DEPLOYED:
            model = tiny_model(name).to(dtype)
            path = deploy_model(model, tmp_path_factory.mktemp("deploy") / f"{name}.pt")
            _DEPLOYED[name, dtype] = (model, load_deployed(path)[0], path)
        return _DEPLOYED[name, dtype]

    return get


def tiny_model(name: str):
    torch.manual_seed(0)
    model = build_model(name, cutoff=CUTOFF, elements=ELEMENTS, e0=E0, scale=0.7, zbl=name == "schnet",
                        train_e0=name == "painn", **testing.tiny_hparams(name))  # fmt: skip
    with torch.no_grad():  # off the initial values, some of which are zeros
        for weight in model.parameters():
            weight.add_(0.1 * torch.randn_like(weight))
    return model.double().eval()


def rattled(atoms: Atoms, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=seed)
    return atoms


def run(module, atoms: Atoms, dtype: torch.dtype, shuffle: bool = False, cutoff: float = CUTOFF) -> list[np.ndarray]:
    inputs = list(neighbour_inputs(atoms, cutoff, dtype))
    if shuffle:  # not in gnnpot's pair order: the module's general graph
        order = torch.randperm(inputs[4].shape[1], generator=torch.Generator().manual_seed(1))
        inputs[4], inputs[5] = inputs[4][:, order], inputs[5][order]
    return [t.detach().double().numpy() for t in module(*inputs)]


def expected(model, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces and virial (-dE/d(strain)) of the Python model."""
    (result,) = testing.evaluate(model, [atoms])
    forces = result["forces"]
    if atoms.pbc.any():
        virial = -result["stress"] * atoms.get_volume()
    else:  # a molecule's virial is sum_i r_i (x) F_i
        virial = atoms.positions.T @ forces
        virial = 0.5 * (virial + virial.T)
    return result["energy"], forces, virial


def assert_matches(module, model, atoms: Atoms, dtype: torch.dtype, shuffle: bool = False) -> None:
    energy, forces, virial = run(module, atoms, dtype, shuffle)
    want_energy, want_forces, want_virial = expected(model, atoms)
    rtol = RTOL[dtype]
    assert abs(energy - want_energy) <= rtol * max(1.0, abs(want_energy)), (energy, want_energy)
    np.testing.assert_allclose(forces, want_forces, rtol=0, atol=rtol * max(1e-3, np.abs(want_forces).max()))
    virial_atol = VIRIAL_RTOL[dtype] * max(1e-3, np.abs(want_virial).max())
    np.testing.assert_allclose(virial, want_virial, rtol=0, atol=virial_atol)


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_deployed_equals_python_model(deployed, name, dtype):
    model, module, _ = deployed(name, dtype)
    ethanol, cell = rattled(molecule("CH3CH2OH"), 0), rattled(testing.triclinic_cell(), 1)
    for atoms in (ethanol, cell):
        assert np.abs(expected(model, atoms)[1]).max() > 1e-3  # a comparison that can fail
        assert_matches(module, model, atoms, dtype)
        assert_matches(module, model, atoms, dtype, shuffle=True)


@pytest.mark.parametrize("name", FLOAT64_FAMILIES)
def test_sizes_zero_and_one(deployed, name):
    """The graph is traced with every size >= 2; one atom, no edges and no triplets work too."""
    model, module, _ = deployed(name, torch.float64)
    one_atom_crystal = rattled(bulk("Cu", "fcc", a=3.6), 2)  # one atom, many edges to its images
    hydrogen = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])  # two edges, no triplet
    chain = Atoms("HOH", positions=[[0, 0, 0], [0.1, 0, 1.0], [0, 0, 4.6]])  # two triplets
    lone = Atoms("CO", positions=[[0, 0, 0], [0, 0, 5.0]])  # no edges: E0 only
    for atoms in (one_atom_crystal, hydrogen, chain, lone):
        assert_matches(module, model, atoms, torch.float64)
        assert_matches(module, model, atoms, torch.float64, shuffle=True)
    energy, forces, virial = run(module, lone, torch.float64)
    e0 = dict(zip(model.elements, model.potential.scale_shift.e0().tolist()))  # trained E0s for painn
    assert energy == pytest.approx(e0[6] + e0[8], abs=1e-10)
    if name == "painn":  # built with train_e0, its corrections randomised
        assert energy != pytest.approx(E0[6] + E0[8], abs=1e-3)
    assert not forces.any() and not virial.any()


def test_float64_positions_are_centred_for_a_float32_model(deployed):
    """Far from the origin, float32 coordinates lose the bond lengths; the module centres first."""
    _, module, _ = deployed("schnet", torch.float32)
    near = rattled(molecule("CH3CH2OH"), 3)
    far = near.copy()
    far.translate([2e4, -3e4, 1e4])  # float32 spacing there is 2e-3 Å
    energy, forces, _ = run(module, near, torch.float64)
    far_energy, far_forces, _ = run(module, far, torch.float64)
    assert far_energy == pytest.approx(energy, rel=1e-6)
    np.testing.assert_allclose(far_forces, forces, atol=1e-5 * np.abs(forces).max())


def test_bad_inputs_raise_clear_errors(deployed):
    _, module, _ = deployed("schnet", torch.float64)
    pos, z, cell, pbc, edge_index, edge_shift = neighbour_inputs(molecule("NH3"), CUTOFF)
    with pytest.raises(Exception, match=r"knows atomic numbers \[1, 6, 8, 29, 79\], got \[7\]"):
        module(pos, z, cell, pbc, edge_index, edge_shift)
    pos, z, cell, pbc, edge_index, edge_shift = neighbour_inputs(molecule("CH4"), CUTOFF)
    with pytest.raises(Exception, match=r"edge_shift must be int64"):
        module(pos, z, cell, pbc, edge_index, edge_shift[:-1])


def test_long_range_model_is_refused(tmp_path):
    model = build_model("schnet", cutoff=CUTOFF, elements=["Li", "F"], long_range={"kind": "ewald"},
                        **testing.tiny_hparams("schnet"))  # fmt: skip
    with pytest.raises(ValueError, match="long-range head or dispersion"):
        deploy_model(model, tmp_path / "ewald.pt")
    assert not (tmp_path / "ewald.pt").exists()


def krr_model(kernel: str) -> CoulombKRR:
    """A KRR model on descriptors of rattled ethanols, with random coefficients."""
    torch.manual_seed(0)
    model = CoulombKRR([1, 6, 8], max_atoms=12, num_train=4, kernel=kernel, width=30.0, e0=E0).double()
    frames = [AtomicData.from_atoms(rattled(molecule("CH3CH2OH"), k), CUTOFF, dtype=torch.float64) for k in range(4)]
    with torch.no_grad():
        model.train_descriptors.copy_(torch.cat([model.descriptor.forward_data(graph) for graph in frames]))
        model.alpha.copy_(torch.randn(4, dtype=torch.float64))
    return model.eval()


@pytest.mark.parametrize("kernel", ["laplacian", "gaussian"])
def test_coulomb_krr_deploys_for_molecules(tmp_path, kernel):
    for dtype in (torch.float64, torch.float32):
        model = krr_model(kernel).to(dtype)
        module, metadata = load_deployed(deploy_model(model, tmp_path / f"krr-{dtype}.pt"))
        assert metadata["family"] == "coulomb_krr" and metadata["max_atoms"] == 12 and not metadata["periodic"]
        ethanol = rattled(molecule("CH3CH2OH"), 7)
        assert np.abs(expected(model, ethanol)[1]).max() > 1e-4
        # water: fewer atoms than max_atoms (zero padding); the Laplacian kernel's forces on it
        # vanish, as every eigenvalue lies below all training ones and the trace is fixed
        for atoms in (ethanol, rattled(molecule("H2O"), 8)):
            assert_matches(module, model, atoms, dtype)
    with pytest.raises(Exception, match="molecules only"):
        module(*neighbour_inputs(rattled(bulk("C", "diamond", a=3.6), 1), CUTOFF))
    with pytest.raises(Exception, match="at most 12 atoms"):
        module(*neighbour_inputs(molecule("C6H6") + molecule("H2O"), CUTOFF))  # 15 atoms


ISOLATED = r"""
import json, sys
sys.modules["gnnpot"] = None  # any import of gnnpot now fails
try:
    import gnnpot
    gnnpot_importable = True
except ImportError:
    gnnpot_importable = False
import torch

files = {"gnnpot.json": "", "cutoff": "", "atomic_numbers": "", "units": ""}
module = torch.jit.load(sys.argv[1], _extra_files=files)
metadata = json.loads(files["gnnpot.json"])
cutoff = float(files["cutoff"])
pos = torch.tensor(json.loads(sys.argv[2]), dtype=torch.float64)
z = torch.tensor(json.loads(sys.argv[3]))
# every ordered pair within the cutoff, by brute force (a molecule: no images)
i, j = torch.meshgrid(torch.arange(len(z)), torch.arange(len(z)), indexing="ij")
keep = (i != j) & ((pos[j] - pos[i]).norm(dim=-1) < cutoff)
edge_index = torch.stack([i[keep], j[keep]])
edge_shift = torch.zeros(edge_index.shape[1], 3, dtype=torch.long)
cell, pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
energy, forces, virial = module(pos, z, cell, pbc, edge_index, edge_shift)
print(json.dumps({
    "gnnpot_importable": gnnpot_importable, "family": metadata["family"], "cutoff": cutoff,
    "atomic_numbers": files["atomic_numbers"].decode(), "units": json.loads(files["units"]),
    "energy": energy.item(), "forces": forces.tolist(),
}))
"""


# DimeNet builds its triplets inside the module; NequIP's graph had gnnpot's layout operator
# (gnnpot.nn.materialize), which the deployed graph must not keep: this process has no gnnpot.
@pytest.mark.parametrize("name", ["dimenet", "nequip"])
def test_loads_and_runs_without_gnnpot(deployed, tmp_path, name):
    model, _, path = deployed(name, torch.float64)
    atoms = rattled(molecule("CH3CH2OH"), 5)
    command = [sys.executable, "-I", "-c", ISOLATED, str(path), json.dumps(atoms.positions.tolist()),
               json.dumps(atoms.numbers.tolist())]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["gnnpot_importable"]
    assert result["family"] == name and result["cutoff"] == CUTOFF
    assert result["atomic_numbers"] == "1 6 8 29 79" and result["units"]["energy"] == "eV"
    energy, forces, _ = expected(model, atoms)
    assert result["energy"] == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(result["forces"], forces, rtol=0, atol=1e-10 * np.abs(forces).max())


def test_cli_deploys_a_pretrained_model(tmp_path, capsys):
    out = tmp_path / "schnet.pt"
    assert main(["deploy", "schnet-emt-cuau", str(out), "--dtype", "float64"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    module, metadata = load_deployed(out)
    model = load_model("schnet-emt-cuau", dtype=torch.float64)
    assert metadata["family"] == "schnet" and metadata["dtype"] == "float64"
    assert metadata["elements"] == ["Cu", "Au"] and metadata["cutoff"] == model.cutoff
    assert metadata["model"]["test_metrics"] == model.metadata["test_metrics"]
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 2]] = 79
    atoms = rattled(atoms, 4)
    energy, forces, virial = run(module, atoms, torch.float64, cutoff=metadata["cutoff"])
    (result,) = testing.evaluate(model, [atoms])
    assert energy == pytest.approx(result["energy"], rel=1e-10)
    np.testing.assert_allclose(forces, result["forces"], rtol=0, atol=1e-10 * np.abs(result["forces"]).max())
    np.testing.assert_allclose(-virial / atoms.get_volume(), result["stress"], rtol=0, atol=1e-12)


def test_cli_bad_model_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "out.pt"
    assert main(["deploy", str(tmp_path / "missing.pt"), str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gnnpot deploy: error: ") and "missing.pt" in err[0]
    assert not out.exists()
