"""One training process for a wall-clock budget, with copies of its newest checkpoint at each mark.

The clock starts when the process is launched, so start-up (imports, reading data, neighbour
lists, statistics) counts against the budget of every model alike. At each mark the newest complete
checkpoint the process has written is copied; after the last mark the process group is stopped
(SIGTERM, then SIGKILL). A checkpoint is complete when it is a whole zip archive (the format of
``torch.save``), so a copy taken while the trainer was still writing is retried.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Snapshot:
    """The checkpoint copied at one mark.

    Attributes:
        mark_s: the mark, seconds after launch.
        path: the copy; None when the process had written no complete checkpoint by then.
        written_s: when the copied checkpoint was written, seconds after launch (it lags the mark
            by up to the checkpoint interval, or an epoch for trainers that save per epoch).
        ended: the process had already exited at the mark.
    """

    mark_s: float
    path: Path | None
    written_s: float | None
    ended: bool = False


@dataclass(frozen=True)
class Run:
    """What :func:`watch` saw.

    Attributes:
        snapshots: one per mark, in rising order.
        returncode: the exit status when the process ended by itself before the last mark was
            taken; None when it was still running and was stopped.
        ended_s: when it exited by itself, seconds after launch; None when it was stopped.
        seconds: launch to stop, s.
        log: its stdout and stderr.
    """

    snapshots: list[Snapshot]
    returncode: int | None
    ended_s: float | None
    seconds: float
    log: Path


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole zip archive (``torch.save``'s format) whose members read back."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def copy_newest(
    candidates: Sequence[Path],
    dest: Path,
    launched: float,
    complete: Callable[[Path], bool] = is_complete,
    tries: int = 20,
    wait_s: float = 0.1,
) -> tuple[Path | None, float | None]:
    """Copy the newest complete file of ``candidates`` (newest first) to ``dest``.

    A candidate that does not copy whole (still being written, or rewritten while copying) is
    tried again ``tries`` times ``wait_s`` apart, then the next candidate is tried.

    Args:
        candidates: checkpoint files, newest first.
        dest: where the copy goes.
        launched: ``time.time()`` at launch; ``written_s`` is measured from it.
        complete: the test of a whole checkpoint.
        tries: attempts per candidate.
        wait_s: pause between attempts, s.

    Returns:
        ``(dest, written_s)``, or ``(None, None)`` when no candidate copied whole.
    """
    for source in candidates:
        for _ in range(tries):
            try:
                before = source.stat().st_mtime
                shutil.copyfile(source, dest)
                after = source.stat().st_mtime
            except OSError:
                time.sleep(wait_s)
                continue
            if before == after and complete(dest):
                return dest, after - launched
            time.sleep(wait_s)
    dest.unlink(missing_ok=True)
    return None, None


def stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End ``process`` and its children (its own process group): SIGTERM, then SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def watch(
    command: Sequence[str],
    marks_s: Sequence[float],
    checkpoints: Callable[[], list[Path]],
    snapshot_dir: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    suffix: str = ".ckpt",
    poll_s: float = 0.2,
    complete: Callable[[Path], bool] = is_complete,
) -> Run:
    """Launch ``command``, copy its newest checkpoint at each mark, stop it after the last one.

    When the process exits by itself, the remaining marks are taken at once (they all get its
    last checkpoint, marked ``ended``).

    Args:
        command: the training command line.
        marks_s: seconds after launch to take snapshots at.
        checkpoints: the process's checkpoint files, newest first (looked up at each mark).
        snapshot_dir: where the copies go, as ``mark-<k>-<seconds>s<suffix>``.
        log: the file its stdout and stderr go to.
        env: its environment (default ours).
        cwd: its working folder.
        suffix: file ending of the copies.
        poll_s: how often to look whether it has exited, s.
        complete: the test of a whole checkpoint.
    """
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    snapshots: list[Snapshot] = []
    with open(log, "w") as stream:
        start, launched = time.monotonic(), time.time()
        process = subprocess.Popen(
            list(command), stdout=stream, stderr=subprocess.STDOUT, env=None if env is None else dict(env),
            cwd=cwd, start_new_session=True,
        )  # fmt: skip
        ended_s = None
        try:
            for k, mark in enumerate(sorted(marks_s)):
                while process.poll() is None and (left := mark - (time.monotonic() - start)) > 0:
                    time.sleep(min(poll_s, left))
                if process.poll() is not None and ended_s is None:
                    ended_s = time.monotonic() - start
                dest = snapshot_dir / f"mark-{k}-{mark:.0f}s{suffix}"
                path, written_s = copy_newest(checkpoints(), dest, launched, complete)
                snapshots.append(Snapshot(mark, path, written_s, ended=ended_s is not None))
        finally:
            returncode = process.poll()
            stop(process)
        seconds = time.monotonic() - start
    return Run(snapshots, returncode, ended_s if returncode is not None else None, seconds, log)
