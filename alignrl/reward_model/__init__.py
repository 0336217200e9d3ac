"""Preference reward models: the data contract (:mod:`.pairs`), a batched scorer (:mod:`.scorer`) and
``alignrl score`` (:mod:`.score`, :mod:`.score_cli`). Nothing heavy is imported here: import the sub-modules."""
