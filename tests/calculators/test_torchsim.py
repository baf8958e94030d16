"""GNNPotModel: gnnpot through torch-sim's ModelInterface equals the ASE calculator, and runs batched NVE."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.stress import voigt_6_to_full_3x3_stress

from gnnpot import GNNPotCalculator, build_model, testing

ts = pytest.importorskip("torch_sim")
from torch_sim.models.interface import validate_model_outputs  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402

from gnnpot.calculators.torchsim import GNNPotModel  # noqa: E402

CPU = torch.device("cpu")


def cu_cells():
    """Cu cells of 1, 4, 8 and 32 atoms (one smaller than the cutoff), and a rattled Cu-Au cell."""
    cells = [bulk("Cu", "fcc", a=3.6)] + [
        bulk("Cu", "fcc", a=3.6, cubic=True).repeat(r) for r in ((1, 1, 1), (2, 1, 1), (2, 2, 2))
    ]
    rattled = bulk("Cu", "fcc", a=3.65, cubic=True).repeat((2, 2, 1))
    rattled.numbers[[0, 5]] = 79
    rattled.rattle(0.1, seed=3)
    return [*cells, rattled]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_batch_equals_the_calculator(dtype, tol):
    cells = cu_cells()
    model = GNNPotModel("painn-emt-cuau", device=CPU, dtype=dtype)
    out = model(ts.io.atoms_to_state(cells, CPU, dtype))
    assert out["energy"].shape == (len(cells),) and out["energy"].dtype == dtype
    assert out["forces"].shape == (sum(map(len, cells)), 3)
    assert out["stress"].shape == (len(cells), 3, 3)
    calc = GNNPotCalculator("painn-emt-cuau", dtype=dtype)
    forces = np.split(out["forces"].double().numpy(), np.cumsum([len(a) for a in cells])[:-1])
    for k, atoms in enumerate(cells):
        atoms.calc = calc
        scale = max(1.0, abs(atoms.get_potential_energy()))
        assert abs(out["energy"][k].item() - atoms.get_potential_energy()) < tol * scale
        np.testing.assert_allclose(forces[k], atoms.get_forces(), rtol=0, atol=tol)
        stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
        np.testing.assert_allclose(out["stress"][k].double().numpy(), stress, rtol=0, atol=tol)
    assert np.abs(out["stress"][-1].numpy()).max() > 1e-3  # the rattled cell is really stressed


def test_flags_dict_input_molecules_and_torch_sim_contract():
    torch.manual_seed(0)
    tiny = build_model("schnet", cutoff=4.0, elements=["H", "O", "Si", "Fe"], **testing.tiny_hparams("schnet"))
    model = GNNPotModel(tiny, device=CPU, compute_stress=False)
    waters = ts.io.atoms_to_state([molecule("H2O"), molecule("H2O")], CPU, torch.float64)
    out = model(waters)
    assert set(out) == {"energy", "forces"}
    torch.testing.assert_close(out["energy"][0], out["energy"][1], rtol=0, atol=1e-12)
    model.compute_stress, model.compute_forces = True, False
    out = model({k: getattr(waters, k) for k in ("positions", "cell", "pbc", "atomic_numbers", "system_idx")})
    assert set(out) == {"energy", "stress"} and out["stress"].isnan().all()  # no stress without a cell
    assert next(tiny.parameters()).dtype == torch.float32  # the caller's model is left alone
    validate_model_outputs(GNNPotModel(tiny, device=CPU), CPU, torch.float64)


def test_bad_input_names_the_system():
    model = GNNPotModel("painn-emt-cuau", device=CPU)
    cells = cu_cells()[:3]
    cells[2].numbers[1] = 26
    with pytest.raises(ValueError, match=r"torch-sim system 2: element\(s\) \['Fe'\] unknown to the model"):
        model(ts.io.atoms_to_state(cells, CPU, torch.float64))
    cells = cu_cells()[:3]
    cells[1].positions[1] = cells[1].positions[0] + 0.01
    with pytest.raises(ValueError, match=r"torch-sim system 1: atoms 0 and 1 are 0.0173 Å apart"):
        model(ts.io.atoms_to_state(cells, CPU, torch.float64))


def test_batched_nve_conserves_energy():
    """100 velocity-Verlet steps of 2 fs of 8 Cu cells (32 atoms each) from 300 K, with torch-sim's NVE."""
    cells = []
    for seed in range(8):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        atoms.rattle(0.01, seed=seed)
        cells.append(atoms)
    model = GNNPotModel("schnet-emt-cuau", device=CPU, dtype=torch.float64)  # 4x faster than painn here
    init, update = ts.nve(
        model=model,
        dt=torch.tensor(2.0e-3 * MetalUnits.time, dtype=torch.float64),  # 2 fs in torch-sim's metal units
        kT=torch.tensor(300.0 * MetalUnits.temperature, dtype=torch.float64),
        seed=0,
    )
    state = init(ts.io.atoms_to_state(cells, CPU, torch.float64))

    def energies(state):
        kinetic = ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta, system_idx=state.system_idx)
        return state.energy.clone(), state.energy + kinetic

    potential0, total0 = energies(state)
    drift = torch.zeros(8, dtype=torch.float64)
    swing = torch.zeros(8, dtype=torch.float64)
    for _ in range(100):
        state = update(state)
        potential, total = energies(state)
        drift = torch.maximum(drift, (total - total0).abs() / 32)
        swing = torch.maximum(swing, (potential - potential0).abs() / 32)
    # measured: max |E_tot(t) - E_tot(0)| 0.031-0.049 meV/atom per system, potential energy swings up to 36 meV/atom
    assert drift.max() < 0.3e-3, f"total energy drift {drift.max() * 1e3:.3f} meV/atom"
    assert swing.min() > 100 * drift.max()  # the atoms really moved: energy flowed between kinetic and potential
