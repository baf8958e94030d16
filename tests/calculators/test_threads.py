"""``--threads auto``: one thread for small systems, else the cores not busy now; the CLI reports it."""

from __future__ import annotations

import json

import pytest
import torch
from ase.build import bulk
from ase.io import write

from gnnpot.calculators import threads
from gnnpot.cli import main


def test_small_systems_get_one_thread_and_numbers_are_kept():
    assert threads.choose_threads(9) == 1
    assert threads.choose_threads(threads.SMALL_SYSTEM - 1) == 1
    assert threads.choose_threads(9, 3) == 3 and threads.choose_threads(9, "2") == 2
    for bad in (0, -1, "two", "1.5", None):
        with pytest.raises(ValueError, match="threads must be 'auto' or a positive integer"):
            threads.choose_threads(500, bad)


@pytest.mark.parametrize(
    ("cores", "busy", "expected"), [(4, 0.0, 4), (4, 1.2, 3), (2, 1.0, 1), (2, 0.4, 2), (2, 5.0, 1)]
)
def test_large_systems_take_the_free_cores(monkeypatch, cores, busy, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda interval_s=0.2: busy)
    assert threads.choose_threads(10_000) == expected


def test_training_keeps_omp_num_threads_else_takes_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda interval_s=0.2: 1.0)  # the other core is busy
    assert threads.training_threads("auto", {}) == 1
    assert threads.training_threads("auto", {"OMP_NUM_THREADS": "3"}) == 3
    assert threads.training_threads("auto", {"OMP_NUM_THREADS": "lots"}) == 1
    monkeypatch.setattr(threads, "busy_cores", lambda interval_s=0.2: 0.1)
    assert threads.training_threads("auto", {}) == 2
    assert threads.training_threads("1", {"OMP_NUM_THREADS": "2"}) == 1
    with pytest.raises(ValueError, match="threads must be 'auto' or a positive integer, got '0'"):
        threads.training_threads("0")


def test_cpu_busy_reads_proc_stat():
    busy = threads.cpu_busy(0.05)
    assert busy is None or 0.0 <= busy <= 1.0
    assert threads.busy_cores(0.05) >= 0.0


def test_md_reports_and_sets_its_threads(tmp_path, capsys):
    before = torch.get_num_threads()
    structure = tmp_path / "cell.extxyz"
    write(structure, bulk("Cu", "fcc", a=3.6, cubic=True))  # 4 atoms: auto is one thread
    args = ["md", "--model", "schnet-emt-cuau", "--structure", str(structure), "--steps", "2", "--log", "-"]
    try:
        assert main([*args, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == 1 and torch.get_num_threads() == 1
        assert main([*args, "--threads", "2"]) == 0
        assert "steps/s on 2 thread(s)" in capsys.readouterr().out
        assert main([*args, "--threads", "many"]) == 1
        assert "threads must be 'auto' or a positive integer, got 'many'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
