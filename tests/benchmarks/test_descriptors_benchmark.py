"""The learning-curve benchmark of fixed and learned descriptors (benchmarks/descriptors.py), without training."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from ase import Atoms

from benchmarks import descriptors
from benchmarks.descriptors import BY_NAME, Job, fresh_model, write_page


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    split = {"train": {"file": "train.npz", "indices": list(range(100, 0, -1))}, "val": {"file": "x", "indices": [0]}}
    (folder / "split.json").write_text(json.dumps(split))
    return folder


@pytest.mark.parametrize("size", [25, 950])
def test_every_neural_model_sees_the_same_number_of_structures(tmp_path, size):
    folder = _folder(tmp_path)
    for name in ("acsf", "schnet", "mace"):
        job = Job(BY_NAME[name], "ethanol", size, 3000, folder, Path("t.npz"), Path("s.npz"), "0:5", tmp_path / name)
        command, settings = descriptors._fit_command(job)
        assert settings["epochs"] == round(3000 / size)
        assert command[command.index("--trainer.max_epochs") + 1] == str(settings["epochs"])
        assert command[command.index("--model.scheduler") + 1] == "cosine"
        assert settings["warmup_steps"] <= settings["steps"] // 10
        if name == "mace":  # stage two over the last fifth, as in its recipe: a fraction of whatever run it gets
            assert "--model.stage_two_start" not in command
            config = yaml.safe_load((descriptors.CONFIGS / settings["config"]).read_text())
            assert config["model"]["stage_two_fraction"] == pytest.approx(0.8)


def test_the_subset_is_a_prefix_of_the_training_frames(tmp_path):
    folder = _folder(tmp_path)
    record = json.loads(descriptors._subset_split(folder, 25).read_text())
    assert record["train"]["indices"] == list(range(100, 75, -1))
    assert record["val"]["indices"] == [0]


@pytest.mark.parametrize("name", list(BY_NAME))
def test_an_untrained_model_of_each_kind_evaluates(name):
    frame = Atoms("CCOH", positions=[[0, 0, 0], [1.5, 0, 0], [2.2, 1.2, 0], [3.1, 1.2, 0.3]])
    model = fresh_model(BY_NAME[name], frame, 25)
    assert descriptors.eval_cost(model, frame, repeats=1) > 0


def test_page_from_hand_written_rows_keeps_the_conclusions(tmp_path):
    rows = [
        {"model": m, "kind": BY_NAME[m].kind, "molecule": "ethanol", "size": n, "samples": 3000, "test_index": "0:5",
         "force_mae": 10.0 * i + n / 100, "energy_mae": 1.0, "train_seconds": 5.0, "n_params": 7}
        for i, m in enumerate(("kernel", "mace")) for n in (25, 950)
    ]  # fmt: skip
    rows.append({**rows[-1], "eval_ms": 1.5})
    rows.append({"model": "hist", "kind": "fixed", "molecule": "ethanol", "size": 25, "error": "exit 1: boom"})
    page = tmp_path / "descriptors.md"
    page.write_text("old\n## Conclusions\nFixed wins small.\n")
    write_page(rows, page, "python -m benchmarks.descriptors")
    text = page.read_text()
    assert "| mace | learned | 10.2 | 19.5 |" in text
    assert "| mace | – | – | 1.50 | 5 | 7 |" not in text  # one molecule: eval and train columns only
    assert "| mace | 1.50 | 5 | 7 |" in text
    assert "hist, ethanol, N=25: exit 1: boom" in text
    assert text.rstrip().endswith("## Conclusions\nFixed wins small.")


def test_nequip_small_is_the_paper_recipe_at_the_protocol_size_and_the_paper_size_runs_on_request():
    paper, small = (
        yaml.safe_load((descriptors.CONFIGS / BY_NAME[n].config).read_text()) for n in ("nequip_paper", "nequip")
    )
    paper_size, small_size = (c["model"].pop("representation_hparams") for c in (paper, small))
    assert {k for k in paper_size if paper_size[k] != small_size[k]} == {"num_interactions", "l_max"}
    assert (small_size["num_interactions"], small_size["l_max"]) == (3, 1)
    assert paper["model"] == small["model"] and paper["data"] == small["data"]
    default = descriptors.build_parser().parse_args([]).models.split(",")
    assert "nequip" in default and "nequip_paper" not in default


class _FakeModel(torch.nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.weight = torch.nn.Parameter(torch.zeros(3))


def test_costs_are_the_median_of_rounds_over_all_models(tmp_path, monkeypatch):
    out = tmp_path / "rows.jsonl"
    rows = [
        {"model": m, "kind": "learned", "molecule": "ethanol", "size": n, "force_mae": 1.0}
        for m in ("schnet", "painn") for n in (25, 950)
    ]  # fmt: skip
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    costs = {"schnet": iter([3.0, 1.0, 2.0]), "painn": iter([9.0, 7.0, 8.0])}
    calls = []

    def fake_cost(model, frame, repeats):
        calls.append(model.name)
        return next(costs[model.name])

    monkeypatch.setattr(descriptors, "eval_cost", fake_cost)
    monkeypatch.setattr(descriptors, "fresh_model", lambda spec, frame, size: _FakeModel(spec.name))
    monkeypatch.setattr(descriptors, "rmd17_file", lambda *args: "ethanol.npz")
    monkeypatch.setattr("gnnpot.data.io.read_frames", lambda path, index: [Atoms("H")])
    descriptors._measure_costs(descriptors.build_parser().parse_args(["--cost-passes", "3"]), out)
    assert calls == ["schnet", "painn"] * 3  # rounds over all models, not one model's passes in a row
    new = descriptors.read_rows(out)[len(rows) :]
    assert {r["model"]: (r["size"], r["eval_ms"], r["eval_passes_ms"]) for r in new} == {
        "schnet": (950, 2.0, [3.0, 1.0, 2.0]),
        "painn": (950, 8.0, [9.0, 7.0, 8.0]),
    }
    assert all(r["n_params"] == 3 and r["eval_model"] == "untrained, same architecture" for r in new)
