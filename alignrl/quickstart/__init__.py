"""The offline quickstart: a tiny model, a synthetic verifiable task, imperfect demonstrations."""
