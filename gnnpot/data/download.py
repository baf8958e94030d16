"""Download the revised MD17 (rMD17) dataset and write its official splits as npz files.

The archive (Christensen & von Lilienfeld, 2020, CC0) holds ``rmd17/npz_data/rmd17_<mol>.npz``
(100,000 frames each) and ``rmd17/splits/index_{train,test}_0N.csv`` (1000 indices each). This
writes ``rmd17_<mol>_<train|test>_0N.npz`` with the same keys, the layout that gnnpot's configs
and tests read (see the README).
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from gnnpot.data.checks import DataError

RMD17_URL = "https://figshare.com/ndownloader/files/23950376"
RMD17_MOLECULES = (
    "aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde",
    "naphthalene", "paracetamol", "salicylic", "toluene", "uracil",
)  # fmt: skip
_ARRAY_KEYS = ("nuclear_charges", "coords", "energies", "forces", "old_indices", "old_energies", "old_forces")


def fetch(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Download ``url`` (``https://`` or ``file://``) to ``dest``, checking ``sha256`` when given."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    if sha256 is not None:
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != sha256:
            partial.unlink()
            raise OSError(f"{url}: sha256 {digest} does not match the expected {sha256}")
    partial.replace(dest)
    return dest


def download_rmd17(
    out_dir: str | Path,
    molecules: tuple[str, ...] | list[str] = RMD17_MOLECULES,
    splits: tuple[int, ...] | list[int] = (1,),
    url: str = RMD17_URL,
    sha256: str | None = None,
) -> list[Path]:
    """Fetch the rMD17 archive and write the official train/test splits per molecule.

    Returns:
        The npz files written, ``out_dir/rmd17_<mol>_<train|test>_0N.npz``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = fetch(url, Path(tmp) / "rmd17.tar.bz2", sha256)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")  # refuses members outside tmp, links out, devices
        except tarfile.FilterError as err:
            raise DataError(f"{url}: refused to extract the archive, {err}") from err
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(f"{url}: not a readable tar archive ({type(err).__name__}: {err})") from err
        root = next(Path(tmp).rglob("npz_data")).parent
        for molecule in molecules:
            source = root / "npz_data" / f"rmd17_{molecule}.npz"
            if not source.exists():
                raise FileNotFoundError(f"{url}: the archive has no {source.relative_to(tmp)}")
            with np.load(source) as data:
                arrays = {key: data[key] for key in _ARRAY_KEYS if key in data}
            for split in splits:
                for part in ("train", "test"):
                    index_file = root / "splits" / f"index_{part}_{split:02d}.csv"
                    indices = np.loadtxt(index_file, dtype=np.int64).reshape(-1)
                    target = out_dir / f"rmd17_{molecule}_{part}_{split:02d}.npz"
                    frames = {k: (v if k == "nuclear_charges" else v[indices]) for k, v in arrays.items()}
                    np.savez_compressed(target, **frames)
                    written.append(target)
    return written
