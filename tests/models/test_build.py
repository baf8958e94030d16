"""build_model, Potential and the ZBL prior."""

import numpy as np
import pytest
import torch
from ase import Atoms
from torch_geometric.data import Batch

from gnnpot import build_model, testing
from gnnpot.data import AtomicData

TINY = testing.tiny_hparams("schnet")


def test_build_model_validates_arguments():
    with pytest.raises(ValueError, match="unknown representation 'nosuchfamily'"):
        build_model("nosuchfamily", cutoff=5.0, elements=["Cu"])
    with pytest.raises(ValueError, match="cutoff must be a finite number > 0"):
        build_model("schnet", cutoff=0.0, elements=["Cu"])
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        build_model("schnet", cutoff=5.0, elements=["Xx"])
    with pytest.raises(ValueError, match="not in elements"):
        build_model("schnet", cutoff=5.0, elements=["Cu"], e0={"Au": 1.0})


def test_config_records_what_was_built():
    model = build_model("schnet", cutoff=4.5, elements=["Au", 29], e0={"Cu": -3.0}, zbl=True, **TINY)
    assert model.config["elements"] == [29, 79]
    assert model.config["e0"] == {29: -3.0, 79: 0.0}
    assert model.config["hparams"] == TINY
    assert model.cutoff == 4.5 and model.elements == [29, 79]


def test_unknown_element_in_potential():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **TINY)
    data = AtomicData.from_atoms(Atoms("CuAu", positions=[[0, 0, 0], [2.5, 0, 0]]), 4.0)
    with pytest.raises(ValueError, match=r"unknown element\(s\) \['Au'\]"):
        model(data)


def test_zbl_is_repulsive_and_smooth():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], zbl=True, **TINY).double()
    plain = build_model("schnet", cutoff=4.0, elements=["Cu"], **TINY).double()
    plain.load_state_dict(model.state_dict())
    energies = []
    for distance in (0.5, 1.0, 2.0):
        frames = [Atoms("Cu2", positions=[[0, 0, 0], [distance, 0, 0]])]
        energies.append(testing.evaluate(model, frames)[0]["energy"] - testing.evaluate(plain, frames)[0]["energy"])
    assert energies[0] > energies[1] > energies[2] > 0
    assert energies[0] > 100  # Cu-Cu at 0.5 Å is far up the nuclear repulsion wall
    testing.check_cutoff_continuity(model, symbols="CuCuCu")
    testing.check_forces_fd(model, Atoms("Cu3", positions=[[0, 0, 0], [1.1, 0.2, 0], [0.3, 1.4, 0.1]]))


def test_training_mode_keeps_graph_for_force_loss():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **TINY)
    frames = [Atoms("Cu3", positions=[[0, 0, 0], [2.1, 0.2, 0], [0.3, 2.4, 0.1]])]
    batch = Batch.from_data_list([AtomicData.from_atoms(a, 4.0) for a in frames])
    model.train()
    out = model(batch)
    assert out["forces"].requires_grad
    out["forces"].pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    assert not model(batch)["forces"].requires_grad


def test_stress_of_non_periodic_frame_in_mixed_batch_is_zero():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **TINY).double()
    from ase.build import bulk

    molecule = Atoms("Cu3", positions=[[0, 0, 0], [2.1, 0.2, 0], [0.3, 2.4, 0.1]])
    data = [AtomicData.from_atoms(a, 4.0, dtype=torch.float64) for a in (molecule, bulk("Cu", "fcc", a=3.6))]
    out = model(Batch.from_data_list(data))
    assert np.allclose(out["stress"][0].detach().numpy(), 0.0)
    assert np.abs(out["stress"][1].detach().numpy()).max() > 0


def test_cached_isolated_baseline_follows_the_weights():
    """In eval mode the isolated-atom baseline is cached; every way of changing weights must refresh it."""
    import copy

    from ase.build import molecule

    torch.manual_seed(0)
    model = build_model("painn", cutoff=4.0, elements=["H", "O"], **testing.tiny_hparams("painn")).eval()
    graph = AtomicData.from_atoms(molecule("H2O"), 4.0)

    def fresh_energy():
        twin = copy.deepcopy(model).train()  # training mode: no cache
        return twin(graph)["energy"].detach()

    first = model(graph)["energy"].detach()
    assert torch.equal(first, fresh_energy())
    with torch.no_grad():  # in-place edit, as optimizers and the EMA do
        next(model.potential.readout.parameters()).add_(0.1)
    second = model(graph)["energy"].detach()
    assert not torch.equal(first, second) and torch.allclose(second, fresh_energy(), atol=1e-6)
    state = {k: v + 0.05 for k, v in model.state_dict().items() if v.is_floating_point()}
    model.load_state_dict(state, strict=False)
    assert torch.allclose(model(graph)["energy"].detach(), fresh_energy(), atol=1e-6)
    next(model.potential.readout.parameters()).data.mul_(2.0)  # bypasses version tracking...
    model.eval()  # ...so eval() clears the cache, as documented
    assert torch.allclose(model(graph)["energy"].detach(), fresh_energy(), atol=1e-6)


def _energy(model, atoms):
    data = Batch.from_data_list([AtomicData.from_atoms(atoms, model.cutoff)])
    out = model(data)
    return float(out["energy"][0].detach()), out["forces"].detach()


def test_trained_e0_shifts_each_element_by_its_correction_and_round_trips(tmp_path):
    from gnnpot.models import read_metadata, save_model
    from gnnpot.models.build import model_from_config

    torch.manual_seed(0)
    e0 = {"Cu": -3.0, "Au": -2.0}
    fixed = build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], e0=e0, **TINY).double()
    trained = build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], e0=e0, train_e0=True, **TINY).double()
    assert "train_e0" not in fixed.config and trained.config["train_e0"] is True
    trained.load_state_dict({**fixed.state_dict(), "potential.scale_shift.delta": torch.zeros(2)})
    with torch.no_grad():
        trained.potential.scale_shift.delta.copy_(torch.tensor([0.25, -0.5]))
    # An isolated atom has the trained E0; a dimer moves by the two corrections; forces do not move.
    for symbol, expected in (("Cu", -3.0 + 0.25), ("Au", -2.0 - 0.5)):
        assert _energy(trained, Atoms(symbol))[0] == pytest.approx(expected, abs=1e-12)
    dimer = Atoms("CuAu", positions=[[0, 0, 0], [2.4, 0.3, 0.1]])
    (e_fixed, f_fixed), (e_trained, f_trained) = _energy(fixed, dimer), _energy(trained, dimer)
    assert e_trained - e_fixed == pytest.approx(0.25 - 0.5, abs=1e-12)
    torch.testing.assert_close(f_trained, f_fixed, rtol=0, atol=1e-14)
    # The correction is a trained parameter with a gradient from the energy alone.
    trained.potential.scale_shift.delta.grad = None
    data = Batch.from_data_list([AtomicData.from_atoms(dimer, 4.0)])
    trained(data)["energy"].sum().backward()
    assert trained.potential.scale_shift.delta.grad.tolist() == pytest.approx([1.0, 1.0])
    # Saved and loaded, rebuilt from its config: the same energies; the file reports the trained E0s.
    path = save_model(trained, tmp_path / "model.pt")
    assert read_metadata(path)["e0"] == pytest.approx({"Cu": -2.75, "Au": -2.5})
    rebuilt = model_from_config(trained.config).double()
    rebuilt.load_state_dict(trained.state_dict())
    assert _energy(rebuilt, dimer)[0] == pytest.approx(e_trained, abs=1e-12)
    from gnnpot import load_model

    assert _energy(load_model(path, dtype=torch.float64), dimer)[0] == pytest.approx(e_trained, abs=1e-12)
