"""The console script's allocator restart (gnnpot.launch) and the cheap ``import gnnpot``."""

import os
import subprocess
import sys

import pytest

from gnnpot import launch
from gnnpot.launch import allocator_environment

GLIBC = (2, 36)
HUGE = {"GNNPOT_MALLOC": "hugepages"}


def test_hugepages_asks_glibc_for_huge_pages():
    assert allocator_environment({"PATH": "/bin"}, GLIBC, "madvise") is None  # the default: no change
    env = allocator_environment({"PATH": "/bin", "GNNPOT_MALLOC": "hugepages"}, GLIBC, "madvise")
    assert env == {"PATH": "/bin", "GNNPOT_MALLOC": "hugepages", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Other tunables are kept; reuse keeps large blocks in the heap.
    env = allocator_environment({"GNNPOT_MALLOC": "reuse", "GLIBC_TUNABLES": "glibc.rtld.x=1"}, GLIBC, "never")
    assert env["GLIBC_TUNABLES"] == "glibc.rtld.x=1:" + launch.SETTINGS["reuse"]


@pytest.mark.parametrize(
    "environ, glibc, thp",
    [
        (HUGE, GLIBC, "always"),  # huge pages already come without asking
        (HUGE, GLIBC, "never"),  # and cannot be had
        (HUGE, (2, 31), "madvise"),  # glibc without the hugetlb tunable
        (HUGE, None, "madvise"),  # not glibc
        ({"GNNPOT_MALLOC": "system"}, GLIBC, "madvise"),
        ({**HUGE, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, "madvise"),  # the user chose
        ({**HUGE, "MALLOC_ARENA_MAX_": "2"}, GLIBC, "madvise"),
        ({**HUGE, "LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, GLIBC, "madvise"),
    ],
)
def test_nothing_changes_where_it_cannot_help_or_the_user_chose(environ, glibc, thp):
    assert allocator_environment(environ, glibc, thp) is None


def test_a_bad_choice_is_an_error():
    with pytest.raises(ValueError, match="GNNPOT_MALLOC must be one of"):
        allocator_environment({"GNNPOT_MALLOC": "fast"}, GLIBC, "madvise")


def test_the_restart_keeps_the_command_line(monkeypatch, tmp_path):
    calls, thp_mode = [], launch.thp_mode
    monkeypatch.setattr(launch, "glibc_version", lambda: GLIBC)
    monkeypatch.setattr(launch, "thp_mode", lambda: "madvise")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv("GNNPOT_MALLOC", "hugepages")
    launch.main(execve=lambda *args: calls.append(args))
    ((executable, argv, env),) = calls
    assert executable == sys.executable and argv == sys.orig_argv and env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert thp_mode(tmp_path / "enabled") == "madvise" and thp_mode(tmp_path / "missing") is None


def test_import_gnnpot_leaves_torch_for_later():
    code = (
        "import sys, gnnpot; assert 'torch' not in sys.modules; "
        "from gnnpot import GNNPotCalculator, REGISTRY; assert 'schnet' in REGISTRY; "
        "assert gnnpot.models.load_model is gnnpot.load_model; print('ok')"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import gnnpot

        gnnpot.nothing  # noqa: B018


def test_auto_reuses_large_blocks_once_a_system_is_large(monkeypatch):
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    monkeypatch.setattr(launch, "_reusing", False)
    monkeypatch.setattr(launch, "glibc_version", lambda: GLIBC)
    assert allocator_environment({}, GLIBC, "madvise") is None  # auto restarts nothing
    small, large = launch.LARGE_SYSTEM - 1, launch.LARGE_SYSTEM
    assert not launch.reuse_large_blocks(small, {}, mallopt)
    for chosen in ({"GNNPOT_MALLOC": "system"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, {"GNNPOT_MALLOC": "x"}):
        assert not launch.reuse_large_blocks(large, chosen, mallopt)
    assert calls == []
    assert launch.reuse_large_blocks(large, {}, mallopt)
    assert calls == [(launch.M_MMAP_MAX, 0), (launch.M_TRIM_THRESHOLD, launch.TRIM_MAX)]
    assert launch.reuse_large_blocks(small, {}, mallopt) and len(calls) == 2  # once per process


def test_every_inference_path_passes_the_atoms_of_each_model_call(monkeypatch):
    """The calculator per system, ``predict`` per batch, torch-sim per state: the size ``auto`` switches on."""
    from ase.build import bulk

    from gnnpot import GNNPotCalculator, predict

    seen = []
    for where in ("calculator", "predict"):
        monkeypatch.setattr(f"gnnpot.calculators.{where}.reuse_large_blocks", seen.append)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = GNNPotCalculator("schnet-emt-cuau")
    atoms.get_potential_energy()
    atoms.pop()
    atoms.get_potential_energy()
    assert seen == [4, 3]
    predict([atoms, atoms.repeat(2), atoms], "schnet-emt-cuau", batch_size=2)
    assert seen[2:] == [3 + 24, 3]
    try:
        import torch_sim as ts
    except ImportError:  # an optional dependency
        return
    import torch

    from gnnpot.calculators.torchsim import GNNPotModel

    monkeypatch.setattr("gnnpot.calculators.torchsim.reuse_large_blocks", seen.append)
    cells = [atoms, atoms.repeat(2)]
    GNNPotModel("schnet-emt-cuau", device=torch.device("cpu"))(ts.io.atoms_to_state(cells, "cpu", torch.float64))
    assert seen[4:] == [27]


@pytest.mark.skipif(launch.glibc_version() is None, reason="glibc's mallopt only")
def test_glibc_takes_the_reuse_setting_at_run_time():
    code = "from gnnpot import launch; print(launch.reuse_large_blocks(10**5))"
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GNNPOT_MALLOC") and "MALLOC_" not in k}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout == "True\n"
