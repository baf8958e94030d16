"""``python -m benchmarks.accuracy``: the time-to-accuracy benchmark (:func:`benchmarks.accuracy.runner.main`)."""

import sys

from benchmarks.accuracy.runner import main

if __name__ == "__main__":
    sys.exit(main())
