"""A corpus of bad input, by class, through every reader and every CLI command.

Each case is a command line of ``gnnpot`` run in-process. A case passes when the command exits
non-zero with exactly one ``error:`` line on stderr, no traceback, and that line names the file
(and the frame, for a problem inside a frame). The classes:

* layout: broken frames of a 10,000-frame extxyz (atom count too large or too small, a truncated
  file, a non-UTF-8 comment, a coordinate that is not a number), each in frame 7000;
* labels: NaN/inf values, missing labels, a NaN stored as NULL by an ASE database;
* atoms: a frame with no atoms, atomic numbers outside 1..118, an element the model lacks;
* files: a directory, an empty file, a missing file, object arrays in an npz, junk in a database;
* hostile files: a checkpoint that would run code, junk as a checkpoint or model file, archives with
  members outside the destination or links;
* configuration: malformed YAML, unknown family, bad values, unknown options, and the argparse
  commands' own argument errors.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import sys
import tarfile
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot.cli import main
from gnnpot.data import DataError, read_frames

BIG = 10_000  # frames of the generated file
BAD = 7000  # the broken frame
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "schnet_demo.yaml")
FIT = ["--trainer.max_epochs", "1", "--run.plots", "false"]  # runs go to the test's working folder


def labelled(atoms: Atoms, energy: float = -1.0) -> Atoms:
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
    return atoms


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    """File name -> path of every bad (and one good) input."""
    root = tmp_path_factory.mktemp("corpus")
    files: dict[str, str] = {}

    def put(name: str, frames=None, text: str | bytes | None = None) -> None:
        path = root / name
        if frames is not None:
            ase.io.write(path, frames, format="extxyz")
        elif isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text)
        files[name] = str(path)

    water = molecule("H2O")
    frames = [labelled(water.copy(), -14.0 - 1e-4 * k) for k in range(BIG)]
    for k, atoms in enumerate(frames):
        atoms.positions[0, 0] += 1e-5 * k
    put("big.xyz", frames)
    lines = (root / "big.xyz").read_text().split("\n")
    per_frame = len(water) + 2
    head = BAD * per_frame  # line index of the broken frame's atom count

    def variant(name: str, edit) -> None:
        copy = list(lines)
        edit(copy)
        put(name, text="\n".join(copy))

    variant("count_large.xyz", lambda c: c.__setitem__(head, str(len(water) + 1)))
    variant("count_small.xyz", lambda c: c.__setitem__(head, str(len(water) - 1)))
    variant("truncated.xyz", lambda c: c.__delitem__(slice(head + 3, None)))
    variant("bad_float.xyz", lambda c: c.__setitem__(head + 2, "O 0.0 zero 0.0 0.0 0.0 0.0"))
    raw = (root / "big.xyz").read_bytes().split(b"\n")
    raw[head + 1] = b"comment \xff\xfe not utf-8"
    put("not_utf8.xyz", text=b"\n".join(raw))

    put("good.xyz", [labelled(water.copy(), -14.0 - 0.01 * k) for k in range(12)])
    put("nan_energy.xyz", [labelled(water.copy()), labelled(water.copy(), float("nan"))])
    inf_forces = labelled(water.copy())
    inf_forces.calc.results["forces"][1, 2] = np.inf
    put("inf_forces.xyz", [labelled(water.copy()), inf_forces])
    put("no_labels.xyz", [water.copy()])
    put("zero_atoms.xyz", [labelled(water.copy()), labelled(Atoms())])
    dummy = labelled(water.copy())
    dummy.numbers[2] = 0
    put("dummy_atom.xyz", [labelled(water.copy()), labelled(water.copy()), dummy])
    put("copper.xyz", [labelled(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]))])

    coords = np.stack([water.positions] * 3)
    np.savez(root / "heavy.npz", nuclear_charges=[8, 300, 1], coords=coords, energies=np.zeros(3), forces=0 * coords)
    files["heavy.npz"] = str(root / "heavy.npz")
    np.savez(
        root / "objects.npz",
        nuclear_charges=np.array([8, 1, None], dtype=object),
        coords=coords,
        energies=np.zeros(3),
        forces=0 * coords,
    )
    files["objects.npz"] = str(root / "objects.npz")

    with ase.db.connect(root / "null_energy.db") as db:
        for energy in (-14.0, float("nan"), -14.1):  # sqlite stores NaN as NULL
            db.write(labelled(water.copy(), energy))
    files["null_energy.db"] = str(root / "null_energy.db")
    put("junk.db", text=b"SQLite format 3\x00" + os.urandom(512))
    (root / "folder.xyz").mkdir()
    files["folder.xyz"] = str(root / "folder.xyz")
    put("empty.xyz", text="")
    files["missing.xyz"] = str(root / "missing.xyz")

    class RunsCode:  # a checkpoint that would call os.system when unpickled unsafely
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    put("code.ckpt", text=pickle.dumps({"state_dict": RunsCode()}))
    put("junk.ckpt", text=b"\x80\x02junk" + os.urandom(64))
    put("junk.pt", text="not a model\n")

    def archive(name: str, member: tarfile.TarInfo, payload: bytes = b"") -> None:
        with tarfile.open(root / name, "w:bz2") as tar:
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload) if payload else None)
        files[name] = (root / name).as_uri()

    archive("escape.tar.bz2", tarfile.TarInfo("../outside.txt"), b"x")
    link = tarfile.TarInfo("rmd17/npz_data")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    archive("link.tar.bz2", link)
    put("not_an_archive.tar.bz2", text=b"BZh9 not really")
    files["not_an_archive.tar.bz2"] = (root / "not_an_archive.tar.bz2").as_uri()

    put("broken.yaml", text="trainer:\n  max_epochs: [1\nmodel: {representation: schnet\n")
    put("structure_nan.xyz", text="2\n\nCu 0 0 0\nCu nan 0 0\n")
    files["root"] = str(root)
    return files


# (case id, argv with {name} placeholders, file named in the message, frame or None, pattern)
CASES = [
    # layout of a 10,000-frame file, one broken frame
    ("count too large", ["data", "stats", "{count_large.xyz}"], "count_large.xyz", BAD, "atom count"),
    ("count too small", ["data", "stats", "{count_small.xyz}"], "count_small.xyz", BAD + 1, "atom count"),
    ("truncated", ["data", "stats", "{truncated.xyz}"], "truncated.xyz", BAD, "file ends"),
    ("bad number", ["data", "stats", "{bad_float.xyz}"], "bad_float.xyz", BAD, "zero"),
    ("not utf-8", ["data", "stats", "{not_utf8.xyz}"], "not_utf8.xyz", BAD, "UTF-8"),
    ("eval layout", ["eval", "--model", "{model}", "--data", "{count_large.xyz}"], "count_large.xyz", BAD, "count"),
    ("fit layout", ["fit", "--config", CONFIG, *FIT, "--data.train_file", "{not_utf8.xyz}"], "not_utf8.xyz", BAD, ""),
    # labels
    ("nan energy", ["data", "stats", "{nan_energy.xyz}"], "nan_energy.xyz", 1, "NaN"),
    ("inf forces", ["data", "stats", "{inf_forces.xyz}"], "inf_forces.xyz", 1, "forces"),
    ("null energy db", ["data", "stats", "{null_energy.db}"], "null_energy.db", 1, "NaN"),
    ("fit nan", ["fit", "--config", CONFIG, *FIT, "--data.train_file", "{nan_energy.xyz}"], "nan_energy.xyz", 1, ""),
    ("fit no labels", ["fit", "--config", CONFIG, *FIT, "--data.train_file", "{no_labels.xyz}"], "no_labels", 0, ""),
    # atoms
    ("zero atoms", ["data", "stats", "{zero_atoms.xyz}"], "zero_atoms.xyz", 1, "no atoms"),
    ("eval zero atoms", ["eval", "--model", "{model}", "--data", "{zero_atoms.xyz}"], "zero_atoms.xyz", 1, "no atoms"),
    ("dummy atom", ["data", "stats", "{dummy_atom.xyz}"], "dummy_atom.xyz", 2, "dummy"),
    ("eval dummy atom", ["eval", "--model", "{model}", "--data", "{dummy_atom.xyz}"], "dummy_atom.xyz", 2, "dummy"),
    ("Z 300", ["data", "stats", "{heavy.npz}"], "heavy.npz", 0, "300"),
    ("unknown element", ["eval", "--model", "{model}", "--data", "{copper.xyz}"], "copper.xyz", 0, "Cu"),
    # files
    ("directory", ["data", "stats", "{folder.xyz}"], "folder.xyz", None, "directory"),
    ("empty", ["data", "stats", "{empty.xyz}"], "empty.xyz", None, "empty"),
    ("missing", ["eval", "--model", "{model}", "--data", "{missing.xyz}"], "missing.xyz", None, "no such file"),
    ("object npz", ["data", "stats", "{objects.npz}"], "objects.npz", None, "nuclear_charges"),
    ("junk db", ["data", "stats", "{junk.db}"], "junk.db", None, "database"),
    ("fit empty", ["fit", "--config", CONFIG, *FIT, "--data.train_file", "{empty.xyz}"], "empty.xyz", None, "empty"),
    # hostile files
    (
        "code checkpoint fit",
        ["fit", "--config", CONFIG, *FIT, "--ckpt_path", "{code.ckpt}"],
        "code.ckpt",
        None,
        "refused",
    ),
    ("code checkpoint test", ["test", "--config", CONFIG, "--ckpt_path", "{code.ckpt}"], "code.ckpt", None, "refused"),
    ("junk checkpoint", ["validate", "--config", CONFIG, "--ckpt_path", "{junk.ckpt}"], "junk.ckpt", None, "torch"),
    ("eval code", ["eval", "--model", "{code.ckpt}", "--data", "{good.xyz}"], "code.ckpt", None, "refused"),
    ("export junk", ["export", "{junk.pt}", "{root}/out.pt", "--no-eval"], "junk.pt", None, "refused|torch file"),
    (
        "md junk",
        [
            "md",
            "--model",
            "{junk.pt}",
            "--structure",
            "{good.xyz}",
            "--ensemble",
            "nve",
            "--temperature",
            "300",
            "--timestep",
            "0.5",
            "--steps",
            "2",
        ],
        "junk.pt",
        None,
        "refused|torch file",
    ),
    (
        "relax nan",
        ["relax", "--model", "{model}", "--structure", "{structure_nan.xyz}"],
        "structure_nan.xyz",
        None,
        "NaN",
    ),
    (
        "escape tar",
        ["data", "download", "rmd17", "--out", "{root}/dl", "--url", "{escape.tar.bz2}"],
        "escape.tar.bz2",
        None,
        "outside",
    ),
    (
        "link tar",
        ["data", "download", "rmd17", "--out", "{root}/dl", "--url", "{link.tar.bz2}"],
        "link.tar.bz2",
        None,
        "link",
    ),
    (
        "junk tar",
        ["data", "download", "rmd17", "--out", "{root}/dl", "--url", "{not_an_archive.tar.bz2}"],
        "not_an_archive",
        None,
        "archive",
    ),
    # configuration and arguments
    ("broken yaml", ["fit", "--config", "{broken.yaml}"], "broken.yaml", None, ""),
    ("unknown family", ["fit", "--config", CONFIG, "--model.representation", "nosuch"], "", None, "nosuch"),
    ("negative cutoff", ["fit", "--config", CONFIG, "--data.cutoff", "-2"], "", None, "cutoff"),
    ("batch zero", ["fit", "--config", CONFIG, "--data.batch_size", "0"], "", None, "batch_size"),
    ("unknown option", ["validate", "--config", CONFIG, "--trainer.no_such_option", "1"], "", None, "no_such_option"),
    ("eval argument", ["eval", "--model", "{model}", "--data", "{good.xyz}", "--dtype", "float16"], "", None, "dtype"),
    ("stats argument", ["data", "stats", "{good.xyz}", "--cutoff", "abc"], "", None, "cutoff"),
    ("generate argument", ["data", "generate", "--num-frames", "many"], "", None, "num-frames"),
    ("pretrained argument", ["pretrained", "--no-such-flag"], "", None, "no-such-flag"),
    ("unknown command", ["frobnicate"], "", None, "frobnicate"),
]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    """A small untrained model of H and O (eval needs a model, not a good one)."""
    from gnnpot.models import build_model, save_model

    model = build_model("schnet", cutoff=4.0, elements=["H", "O"], num_features=8)
    return str(save_model(model, tmp_path_factory.mktemp("model") / "water.pt"))


@pytest.mark.parametrize(("argv", "name", "frame", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(argv, name, frame, pattern, corpus, model_file, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    # Loggers that an earlier in-process run attached to an earlier test's captured stderr (now closed).
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)] + [logging.root]
    for handler in (h for logger in loggers for h in getattr(logger, "handlers", [])):
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # setStream would flush the closed one
    words = [re.sub(r"\{([^}]+)\}", lambda m: model_file if m[1] == "model" else corpus[m[1]], w) for w in argv]
    try:
        code = main(words)
    except SystemExit as exit_:  # argparse's own argument errors exit
        code = exit_.code
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    line = errors[0]
    assert line.startswith("gnnpot"), line
    assert name in line, line
    if frame is not None:
        assert f"frame {frame}" in line, line
    assert re.search(pattern, line), line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_debug_shows_the_traceback(corpus):
    with pytest.raises(DataError, match="frame 1"):
        main(["data", "stats", corpus["nan_energy.xyz"], "--debug"])


def test_every_reader_names_the_broken_frame(corpus):
    """The library call (no CLI) raises DataError naming file and frame, for each reader."""
    for name, frame in (("count_large.xyz", BAD), ("null_energy.db", 1), ("heavy.npz", 0), ("dummy_atom.xyz", 2)):
        with pytest.raises(DataError, match=re.escape(f"{corpus[name]}, frame {frame}")):
            read_frames(corpus[name])


def test_unreadable_file_says_permission(corpus, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files without read permission")
    path = tmp_path / "locked.db"
    path.write_bytes(open(corpus["null_energy.db"], "rb").read())
    path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        read_frames(path)


def test_hostile_checkpoint_never_ran(corpus, capfd):
    main(["eval", "--model", corpus["code.ckpt"], "--data", corpus["good.xyz"]])
    assert "pwned" not in capfd.readouterr().out
