"""The DFT-D3(BJ) dispersion term (gnnpot.nn.dispersion), against s-dftd3's own ASE calculator."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.stress import voigt_6_to_full_3x3_stress

from gnnpot import build_model, keys, testing
from gnnpot.models import load_model, save_model

pytest.importorskip("tad_dftd3")

CUTOFF = 4.0
ELEMENTS = ["H", "C", "O", "Na", "Cl", "Cu"]


def make_model(dispersion, long_range=None):
    torch.manual_seed(0)
    return (
        build_model(
            "schnet",
            cutoff=CUTOFF,
            elements=ELEMENTS,
            dispersion=dispersion,
            long_range=long_range,
            **testing.tiny_hparams("schnet"),
        )
        .double()
        .eval()
    )


def dispersion_only(model, frames):
    """The model's outputs less those of the same weights without the dispersion term."""
    local = make_model(None, model.config.get("long_range"))
    local.load_state_dict(model.state_dict())
    return [
        {key: np.asarray(full[key]) - np.asarray(bare[key]) for key in full if key != keys.ATOMIC_ENERGY}
        for full, bare in zip(testing.evaluate(model, frames), testing.evaluate(local, frames))
    ]


def systems():
    ethanol = molecule("CH3CH2OH")
    salt = bulk("NaCl", "rocksalt", a=5.64) * (1, 1, 2)
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    copper.set_cell(copper.cell.array @ [[1.0, 0.05, 0.0], [0.0, 1.0, 0.03], [0.02, 0.0, 1.0]], scale_atoms=True)
    for atoms in (ethanol, salt, copper):
        atoms.rattle(0.05, seed=1)
    return [ethanol, salt, copper]


@pytest.mark.parametrize("functional", ["pbe", "b3lyp"])
def test_matches_the_s_dftd3_ase_calculator(functional):
    """Energy, forces and stress of a molecule and two periodic cells, against s-dftd3 without ATM."""
    dftd3_ase = pytest.importorskip("dftd3.ase")
    frames = systems()
    ours = dispersion_only(make_model({"functional": functional}), frames)
    for atoms, result in zip(frames, ours):
        atoms.calc = dftd3_ase.DFTD3(method=functional, damping="d3bj", atm=False)
        assert result[keys.ENERGY] == pytest.approx(atoms.get_potential_energy(), rel=1e-9, abs=1e-10)
        np.testing.assert_allclose(result[keys.FORCES], atoms.get_forces(), rtol=0, atol=1e-9)
        if atoms.pbc.all():
            reference = voigt_6_to_full_3x3_stress(atoms.get_stress())
            np.testing.assert_allclose(result[keys.STRESS], reference, rtol=0, atol=1e-10)


def test_contract_with_dispersion_and_electrostatics():
    model = make_model({"functional": "pbe", "cutoff": 12.0, "cn_cutoff": 10.0}, {"kind": "ewald"})
    ethanol, _, copper = systems()
    for atoms in (ethanol, copper):
        testing.check_invariance(model, atoms)
        testing.check_forces_fd(model, atoms)
    testing.check_stress_fd(model, copper)
    testing.check_batch(model, [ethanol, copper, molecule("H2O")])
    testing.check_isolated_atom(model, {})


def test_config_round_trip_and_errors(tmp_path):
    model = make_model({"functional": "pbe"})
    assert model.config["dispersion"] == {"functional": "pbe"}
    loaded = load_model(save_model(model, tmp_path / "model.pt"), dtype=torch.float64)
    assert loaded.config["dispersion"] == {"functional": "pbe"}
    frames = systems()[:2]
    for before, after in zip(testing.evaluate(model, frames), testing.evaluate(loaded, frames)):
        np.testing.assert_array_equal(before[keys.FORCES], after[keys.FORCES])
    with pytest.raises(ValueError, match="no D3\\(BJ\\) parameters for functional 'nosuchfunctional'"):
        make_model({"functional": "nosuchfunctional"})
    with pytest.raises(ValueError, match="compiled path does not cover"):
        model.enable_compile()
