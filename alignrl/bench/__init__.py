"""``alignrl bench``: speed and memory side by side with the peers (see :mod:`alignrl.bench.cli`)."""
