"""``python -m benchmarks``: the speed benchmark's command line (:func:`benchmarks.runner.main`)."""

import sys

from benchmarks.runner import main

if __name__ == "__main__":
    sys.exit(main())
