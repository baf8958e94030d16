"""Write the embedded EMT Cu-Au dataset: ``python scripts/generate_data.py [--out FILE] [--seed N]``.

A thin wrapper of ``gnnpot data generate``; all logic is in :mod:`gnnpot.data.generate`.
"""

import sys

from gnnpot.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "generate", *sys.argv[1:]]))
