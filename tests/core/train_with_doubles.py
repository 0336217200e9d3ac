"""``alignrl`` with the test doubles registered: ``python tests/core/train_with_doubles.py train RECIPE ...``."""

import sys

import doubles  # noqa: F401  (registers the test doubles)
import rewards_for_tests  # noqa: F401  (registers the test rewards)
from alignrl.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
