"""Speed benchmark of gnnpot against its peers (``../shared/peers/PROTOCOL.md``); all logic is in
:mod:`gnnpot.benchmark`.

    python scripts/benchmark.py --out bench.jsonl --markdown docs/benchmarks.md \\
        --peers schnetpack,pyg,mace,nequip --scaling
    python scripts/benchmark.py --from-jsonl bench.jsonl --markdown docs/benchmarks.md
    python scripts/benchmark.py --help
"""

from __future__ import annotations

import sys

from gnnpot.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
