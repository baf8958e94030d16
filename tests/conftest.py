"""Shared fixtures."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The reference data: ``$GNNPOT_SHARED_DATA``, else the ``shared/data`` folder beside the repo."""
    env = os.environ.get("GNNPOT_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real reference data (rMD17, acac, mlearn); skips the test when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set GNNPOT_SHARED_DATA)")
    return path
