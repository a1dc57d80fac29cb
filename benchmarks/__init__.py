"""Measurements of the runner, each a module run from the repository root:
`python -m benchmarks.<name>` (the `bench*` and `campaign` targets of the Makefile)."""
