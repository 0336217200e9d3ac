import doubles  # noqa: F401  (registers the test doubles)
