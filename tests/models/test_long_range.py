"""The long-range electrostatic head (gnnpot.nn.long_range), on the families and alone, in float64.

The contract checks of :mod:`gnnpot.testing` run over every family with learned (latent) charges;
the physics of the Ewald and direct sums is checked with fixed charges against closed forms
(Coulomb's law, the Madelung constant of rock salt) and, where installed, torch-pme.
"""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.data import Batch

from gnnpot import REGISTRY, build_model, keys, testing
from gnnpot.data import AtomicData, build_graphs, neighbor_list_arrays, read_frames, write_frames
from gnnpot.models import load_model, model_from_config, save_model
from gnnpot.nn.long_range import COULOMB_CONSTANT

CUTOFF = 4.0
ELEMENTS = ["H", "C", "O", "Na", "Cl", "Cu", "Au"]
E0 = {1: -13.6, 6: -1030.5, 8: -2040.1, 11: -1.1, 17: -2.2, 29: -1.3, 79: -0.7}
LATENT = {"kind": "ewald"}
FIXED = {"kind": "fixed_charges"}
MADELUNG_NACL = 1.747564594633  # per ion pair, at the nearest-neighbour distance
_MODELS: dict = {}


def make_model(name: str, long_range: dict | None = LATENT):
    key = (name, repr(long_range))
    if key not in _MODELS:
        torch.manual_seed(0)
        hparams = testing.tiny_hparams(name)
        model = build_model(name, cutoff=CUTOFF, elements=ELEMENTS, e0=E0, scale=0.7, long_range=long_range, **hparams)
        _MODELS[key] = model.double().eval()
    return _MODELS[key]


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    return atoms


def triclinic() -> Atoms:
    return testing.triclinic_cell()


def straddling_ions() -> Atoms:
    """Na, Cl and Cu in a skewed cell, each within 0.15 Å of a face: their nearest images are across it."""
    cell = np.array([[4.2, 0.3, 0.0], [-0.4, 3.9, 0.2], [0.1, 0.3, 4.4]])
    frac = np.array([[0.02, 0.5, 0.97], [0.97, 0.03, 0.5], [0.5, 0.98, 0.02]])
    return Atoms("NaClCu", scaled_positions=frac, cell=cell, pbc=True)


def with_charges(atoms: Atoms, charges) -> Atoms:
    atoms = atoms.copy()
    atoms.set_initial_charges(charges)
    return atoms


def head_only(model, frames):
    """What the head adds: the model's outputs less those of the same weights without it."""
    local = model_from_config({k: v for k, v in model.config.items() if k != "long_range"}).double().eval()
    local.load_state_dict({k: v for k, v in model.state_dict().items() if "long_range" not in k})
    return [
        {key: np.asarray(full[key]) - np.asarray(bare[key]) for key in full if key != keys.ATOMIC_ENERGY}
        for full, bare in zip(testing.evaluate(model, frames), testing.evaluate(local, frames))
    ]


# --- the contract, every family with latent charges -------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_contract_with_latent_charges(name):
    """Invariance, finite-difference forces and stress, batching and the isolated atom."""
    model = make_model(name)
    for system in (ethanol(), triclinic(), straddling_ions()):
        testing.check_invariance(model, system)
        # a step below the default: the tiny models' curvature near these close images makes the
        # O(step^2) error of the default step ~1e-6 for some families, head or not
        testing.check_forces_fd(model, system, step=5e-5)
    testing.check_stress_fd(model, triclinic())
    testing.check_stress_fd(model, straddling_ions())
    testing.check_batch(model, [ethanol(), triclinic(), bulk("Cu", "fcc", a=3.6), molecule("H2O")])
    testing.check_isolated_atom(model, E0)


def test_supercell_and_wrapping_with_latent_charges():
    model = make_model("schnet")
    testing.check_supercell(model, straddling_ions())
    testing.check_wrapping(model, straddling_ions())
    testing.check_edge_order(model, [ethanol(), triclinic()])


def test_latent_charges_add_up_to_each_frame_total_charge():
    model = make_model("painn")
    frames = [ethanol(), triclinic(), molecule("H2O"), Atoms("Na")]
    frames[0].info["charge"] = 1.0
    frames[1].info["total_charge"] = -2.0
    frames[3].info["charge"] = 1.0
    seen = []
    hook = model.potential.long_range.charges.register_forward_hook(lambda *args: seen.append(args[2].detach()))
    try:
        results = testing.evaluate(model, frames)
    finally:
        hook.remove()
    sums = torch.stack([part.sum() for part in seen[0].split([len(a) for a in frames])])
    torch.testing.assert_close(sums, torch.tensor([1.0, -2.0, 0.0, 1.0], dtype=torch.float64), rtol=0, atol=1e-12)
    assert seen[0][-1] == 1.0  # a lone charged ion carries the whole charge, and with no pair no energy:
    assert results[3][keys.ENERGY] == pytest.approx(E0[11], abs=1e-12) and not results[3][keys.FORCES].any()


# --- the physics, fixed charges --------------------------------------------------------------


def test_direct_coulomb_of_two_point_charges():
    r, q1, q2 = 3.1, 1.5, -0.5
    pair = with_charges(Atoms("NaCl", positions=[[0.2, 0.1, -0.3], [0.2 + r, 0.1, -0.3]]), [q1, q2])
    (added,) = head_only(make_model("schnet", FIXED), [pair])
    assert added[keys.ENERGY] == pytest.approx(COULOMB_CONSTANT * q1 * q2 / r, rel=1e-12)
    force = COULOMB_CONSTANT * q1 * q2 / r**2  # on the second atom, along +x (attractive: negative)
    np.testing.assert_allclose(added[keys.FORCES], [[-force, 0, 0], [force, 0, 0]], atol=1e-12)


def test_gaussian_charges_interact_by_erf():
    r, sigma = 1.3, 0.8
    pair = with_charges(Atoms("NaCl", positions=[[0, 0, 0], [0, r, 0]]), [1.0, -1.0])
    (added,) = head_only(make_model("schnet", {**FIXED, "smearing": sigma}), [pair])
    assert added[keys.ENERGY] == pytest.approx(-COULOMB_CONSTANT * math.erf(r / (2 * sigma)) / r, rel=1e-12)


@pytest.mark.parametrize("cubic", [True, False])
def test_rock_salt_gives_the_madelung_constant(cubic):
    a = 5.64
    crystal = bulk("NaCl", "rocksalt", a=a, cubic=cubic)
    crystal = with_charges(crystal, np.where(crystal.numbers == 11, 1.0, -1.0))
    (added,) = head_only(make_model("schnet", FIXED), [crystal])
    madelung = -added[keys.ENERGY] / (len(crystal) / 2) * (a / 2) / COULOMB_CONSTANT
    assert abs(madelung - MADELUNG_NACL) < 1e-6, madelung
    assert (
        np.abs(added[keys.FORCES]).max() < 1e-9
        and np.abs(added[keys.STRESS] - np.diag(np.diag(added[keys.STRESS]))).max() < 1e-9
    )


def charged_cell() -> Atoms:
    """Seven point charges adding up to +0.7 e in a skewed cell, some close to its faces."""
    rng = np.random.default_rng(3)
    cell = np.array([[5.1, 0.4, -0.2], [0.6, 4.7, 0.3], [-0.3, 0.5, 5.5]])
    frac = np.vstack([rng.random((5, 3)), [[0.01, 0.5, 0.5], [0.99, 0.52, 0.48]]])
    atoms = Atoms("Na3Cl2CuAu", scaled_positions=frac, cell=cell, pbc=True)
    charges = rng.normal(size=7)
    return with_charges(atoms, charges - charges.mean() + 0.1)


@pytest.mark.parametrize("smearing", [0.0, 0.6])
def test_ewald_does_not_depend_on_its_splitting(smearing):
    """Energy, forces and stress of a charged cell alike for three real-space cutoffs and accuracies."""
    atoms = charged_cell()
    results = [
        head_only(
            make_model("schnet", {**FIXED, "smearing": smearing, "cutoff": cutoff, "accuracy": accuracy}), [atoms]
        )[0]
        for cutoff, accuracy in [(5.0, 1e-12), (8.0, 1e-12), (11.0, 1e-14)]
    ]
    for result in results[1:]:
        for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
            np.testing.assert_allclose(result[key], results[0][key], rtol=0, atol=1e-9, err_msg=key)


def test_fixed_charge_forces_and_stress_match_finite_differences():
    model = make_model("schnet", {**FIXED, "accuracy": 1e-12})
    testing.check_forces_fd(model, charged_cell())
    testing.check_stress_fd(model, charged_cell())
    testing.check_forces_fd(model, with_charges(ethanol(), np.linspace(-0.6, 0.6, 9)))


def test_agrees_with_torch_pme():
    torchpme = pytest.importorskip("torchpme")
    atoms = charged_cell()
    atoms.set_initial_charges(atoms.get_initial_charges() - atoms.get_initial_charges().mean())
    (added,) = head_only(make_model("schnet", {**FIXED, "accuracy": 1e-10}), [atoms])
    head = make_model("schnet", {**FIXED, "accuracy": 1e-10}).potential.long_range
    i, j, shifts = neighbor_list_arrays(atoms.positions, atoms.cell.array, atoms.pbc, head.cutoff)
    pos, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    distances = torch.linalg.norm(pos[j] - pos[i] + torch.tensor(shifts, dtype=torch.float64) @ cell, dim=1)
    # torch-pme: smearing s splits 1/r by erf(r / (sqrt(2) s)); its ns counts k-vectors across, both signs
    potential = torchpme.CoulombPotential(smearing=head.split / math.sqrt(2))
    calculator = torchpme.EwaldCalculator(potential, lr_wavelength=math.pi / head.k_cutoff, full_neighbor_list=True)
    charges = torch.tensor(atoms.get_initial_charges()).unsqueeze(1)
    phi = calculator(charges, cell, pos, torch.tensor(np.stack([i, j], axis=1)), distances)
    assert added[keys.ENERGY] == pytest.approx(COULOMB_CONSTANT * float((charges * phi).sum()), rel=1e-8)


# --- config, files, errors --------------------------------------------------------------------


def test_save_load_and_config_round_trip(tmp_path):
    options = {"kind": "ewald", "smearing": 0.7, "cutoff": 6.5, "accuracy": 1e-7}
    model = make_model("painn", options)
    assert model.config["long_range"] == options
    for weight in model.potential.long_range.parameters():  # trained-looking head weights
        weight.data.normal_(generator=torch.Generator().manual_seed(1))
    loaded = load_model(save_model(model, tmp_path / "model.pt"), dtype=torch.float64)
    assert loaded.config["long_range"] == options and repr(loaded.potential.long_range) == repr(
        model.potential.long_range
    )
    frames = [ethanol(), straddling_ions()]
    for before, after in zip(testing.evaluate(model.eval(), frames), testing.evaluate(loaded, frames)):
        for key in before:
            np.testing.assert_array_equal(before[key], after[key])
    assert model_from_config(model.config).config == model.config


def test_model_without_a_head_keeps_its_numbers():
    """A shipped model gives the numbers recorded before the head existed (float64)."""
    model = load_model("schnet-emt-cuau", dtype=torch.float64)
    assert "long_range" not in model.config and not model.potential.direct_geometry
    (result,) = testing.evaluate(model, [triclinic()])
    assert result[keys.ENERGY] == pytest.approx(14.695269256913893, rel=1e-12)
    np.testing.assert_allclose(
        result[keys.FORCES][0], [1.5471219429182441, -1.2852388938657375, -4.641504509332227], rtol=1e-10
    )
    np.testing.assert_allclose(
        np.diag(result[keys.STRESS]), [-1.323313396119571, -0.3870548726426907, -0.5349739153041414], rtol=1e-10
    )


def test_errors_are_clear():
    with pytest.raises(ValueError, match="long_range kind must be one of"):
        build_model("schnet", cutoff=CUTOFF, elements=ELEMENTS, long_range={"kind": "pme"})
    with pytest.raises(ValueError, match=r"unknown long_range option\(s\) \['sigma'\]"):
        build_model("schnet", cutoff=CUTOFF, elements=ELEMENTS, long_range={"kind": "ewald", "sigma": 1.0})
    with pytest.raises(ValueError, match="compiled path does not cover models with a long-range head"):
        make_model("schnet").enable_compile()
    with pytest.raises(ValueError, match="fixed charges need per-atom charges"):
        testing.evaluate(make_model("schnet", FIXED), [ethanol()])
    slab = bulk("Cu", "fcc", a=3.6)
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="periodic along all three directions or none"):
        testing.evaluate(make_model("schnet"), [slab])


def test_charges_travel_from_extxyz_to_graphs(tmp_path):
    atoms = with_charges(molecule("H2O"), [-0.8, 0.4, 0.4])
    atoms.info["charge"] = -1.0
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((3, 3)))
    write_frames(tmp_path / "water.xyz", [atoms])
    frames = read_frames(tmp_path / "water.xyz")
    graphs = build_graphs(frames[:1], CUTOFF)
    assert graphs[0][keys.TOTAL_CHARGE].tolist() == [-1.0]
    assert graphs[0][keys.CHARGES].tolist() == [-0.8, 0.4, 0.4]
    back = graphs[0].to_atoms()
    assert back.info["charge"] == -1.0 and back.get_initial_charges().tolist() == [-0.8, 0.4, 0.4]
    plain = AtomicData.from_atoms(molecule("H2O"), CUTOFF)
    assert plain[keys.TOTAL_CHARGE].tolist() == [0.0] and keys.CHARGES not in plain
    batch = Batch.from_data_list(graphs + build_graphs(frames, CUTOFF))
    assert batch[keys.TOTAL_CHARGE].tolist() == [-1.0, -1.0]


def test_frame_store_keeps_the_charges(tmp_path):
    pytest.importorskip("lmdb")
    from gnnpot.data.store import FrameStore, write_store

    atoms = with_charges(molecule("H2O"), [-0.8, 0.4, 0.4])
    atoms.info["charge"] = 0.0
    write_store([atoms, molecule("H2O")], tmp_path / "frames.lmdb")
    store = FrameStore(tmp_path / "frames.lmdb")
    assert store[0].get_initial_charges().tolist() == [-0.8, 0.4, 0.4] and not store[1].has("initial_charges")


def test_training_reaches_the_head_weights():
    """The force loss (a second derivative) and the energy reach the charge model's weights."""
    model = make_model("schnet").train()
    data = Batch.from_data_list(
        [AtomicData.from_atoms(a, CUTOFF, dtype=torch.float64) for a in (ethanol(), straddling_ions())]
    )
    out = model(data)
    loss = out[keys.ENERGY].square().sum() + out[keys.FORCES].square().sum() + out[keys.STRESS].square().sum()
    loss.backward()
    grads = [p.grad for p in model.potential.long_range.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()
    model.eval()


def test_lightning_module_trains_and_checkpoints_a_head(tmp_path):
    import lightning as L
    from torch_geometric.loader import DataLoader

    from gnnpot.data.generate import generate_emt_dataset
    from gnnpot.training import PotentialModule

    with torch.random.fork_rng():
        graphs = build_graphs(
            generate_emt_dataset(6, seed=2, frames_per_trajectory=3, kinds=("bulk", "strained")), CUTOFF
        )
    options = {"kind": "ewald", "smearing": 1.0, "cutoff": 6.0, "accuracy": 1e-5}
    module = PotentialModule(
        "schnet", testing.tiny_hparams("schnet"), cutoff=CUTOFF, elements=["Cu", "Au"], e0={}, scale=1.0,
        long_range=options, ema_decay=None,
    )  # fmt: skip
    assert module.model.config["long_range"] == options and module.hparams.long_range == options
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, DataLoader(graphs, batch_size=3), DataLoader(graphs, batch_size=3))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    loaded = load_model(tmp_path / "run.ckpt")
    assert loaded.config["long_range"] == options
    batch = Batch.from_data_list(graphs[:2])
    torch.testing.assert_close(loaded(batch)[keys.ENERGY], module.model.eval()(batch)[keys.ENERGY])
    with pytest.raises(ValueError, match="compiled path does not cover"):
        PotentialModule("schnet", cutoff=CUTOFF, elements=["Cu"], e0={}, scale=1.0, long_range=options, compile=True)
