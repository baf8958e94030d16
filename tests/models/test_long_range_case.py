"""The long-range case of ``benchmarks/long_range.py`` on a stored sample, and its periodic reference.

``tests/data/lif_dimer_pbe_sample.xyz`` holds 25 frames labelled by that script (PBE/def2-SVP,
PySCF): the 11 frames of its fixed-orientation curve (two LiF molecules, collinear head-to-tail,
bonds 1.57 Å, centres of mass 3.5-15 Å apart; ``info["separation"]``) first, then 14 of its random
training frames (no ``separation`` key). LiF is used instead of NH4+ ... Cl- because PBE cannot
converge the separated ion pair (see the script's docstring).
"""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from ase.build import bulk
from torch_geometric.data import Batch

from benchmarks.long_range import COULOMB, EwaldBornMayer, finite_difference_errors, nacl_cells
from gnnpot import build_model, keys, testing
from gnnpot.data import AtomicData, build_graphs, read_frames

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "lif_dimer_pbe_sample.xyz"
CUTOFF = 5.0
MADELUNG_NACL = 1.747564594633


@pytest.fixture(scope="module")
def frames():
    return list(read_frames(SAMPLE))


def curve(frames):
    points = [atoms for atoms in frames if "separation" in atoms.info][:11]
    assert len(points) == 11
    return points


def test_dft_interaction_reaches_past_the_cutoff_as_a_dipole_pair(frames):
    points = curve(frames)
    r = np.array([atoms.info["separation"] for atoms in points])
    energy = np.array([atoms.get_potential_energy() for atoms in points])
    assert r[-1] == pytest.approx(15.0) and np.all(np.diff(r) > 0)
    beyond = r >= 6.0  # past the 5 Å cutoff and past contact
    # the same two monomers at each point, so E(r) - E(15 Å) is the interaction's change alone
    assert energy[r == 6.0][0] - energy[-1] < -0.05  # > 50 meV of attraction left beyond the cutoff
    # collinear dipoles: E = c - 2 k mu^2 / r^3 (k = 14.4 eV Å/e^2); fit c and mu^2
    design = np.stack([np.ones(beyond.sum()), -2 * COULOMB / r[beyond] ** 3], axis=1)
    (offset, mu_squared), *_ = np.linalg.lstsq(design, energy[beyond], rcond=None)
    residual = energy[beyond] - design @ [offset, mu_squared]
    assert np.abs(residual).max() < 0.1 * (energy[beyond].max() - energy[beyond].min())
    mu_debye = np.sqrt(mu_squared) / 0.20819434  # e Å -> D
    assert 5.0 < mu_debye < 8.0  # LiF's dipole: 6.3 D measured


def test_local_model_is_blind_beyond_its_cutoff_and_the_head_is_not(frames):
    far = [atoms for atoms in curve(frames) if atoms.info["separation"] >= 10.0]  # 10, 12 and 15 Å
    graphs = Batch.from_data_list(build_graphs(far, CUTOFF))
    energies = {}
    for name, long_range in (("local", None), ("ewald", {"kind": "ewald"})):
        torch.manual_seed(0)
        model = build_model(
            "schnet", cutoff=CUTOFF, elements=["Li", "F"], long_range=long_range, **testing.tiny_hparams("schnet")
        )
        energies[name] = model.double().eval()(graphs)[keys.ENERGY].detach()
    local, ewald = energies["local"], energies["ewald"]
    torch.testing.assert_close(local, local[:1].expand(3), rtol=0, atol=1e-9)
    assert (ewald.max() - ewald.min()).item() > 1e-6
    assert torch.all(torch.diff(ewald) > 0) or torch.all(torch.diff(ewald) < 0)  # monotonic in r, as 1/r terms


def test_training_with_the_head_runs(frames, tmp_path):
    from torch_geometric.loader import DataLoader

    from gnnpot.training import PotentialModule

    graphs = build_graphs(frames, CUTOFF)
    per_atom = float(np.mean([atoms.get_potential_energy() / len(atoms) for atoms in frames]))
    torch.manual_seed(0)
    module = PotentialModule(
        "schnet", testing.tiny_hparams("schnet"), cutoff=CUTOFF, elements=["Li", "F"], long_range={"kind": "ewald"},
        e0={"Li": per_atom, "F": per_atom}, scale=1.0, ema_decay=None, lr=0.01,
    )  # fmt: skip
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, DataLoader(graphs, batch_size=8), DataLoader(graphs[:8], batch_size=8))
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))
    out = module.model.eval()(AtomicData.from_atoms(frames[0], CUTOFF))
    assert torch.isfinite(out[keys.ENERGY]).all() and torch.isfinite(out[keys.FORCES]).all()


def test_ewald_born_mayer_forces_and_stress_by_finite_differences():
    atoms = nacl_cells(1, np.random.default_rng(3))[0]  # strained and rattled, float64 throughout
    force_error, stress_error = finite_difference_errors(atoms, EwaldBornMayer(), step=1e-5)
    assert force_error < 1e-6 and stress_error < 1e-7


def test_ewald_born_mayer_gives_the_madelung_energy_and_is_at_rest_at_its_minimum():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.calc = EwaldBornMayer(a=0.0)
    pairs = len(atoms) / 2
    assert atoms.get_potential_energy() / pairs == pytest.approx(-MADELUNG_NACL * COULOMB / 2.82, rel=1e-7)
    atoms.calc = EwaldBornMayer()
    assert np.abs(atoms.get_forces()).max() < 1e-9
    assert np.abs(atoms.get_stress()).max() < 1e-3  # eV/Å^3: near zero pressure at a = 5.64 Å
