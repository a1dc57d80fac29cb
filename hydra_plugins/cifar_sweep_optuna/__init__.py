"""Where Hydra discovers the cifar_sweep sweeper: registration only; the sweep is cifar_sweep.sweep.

Hydra only loads sweepers from the `hydra_plugins` namespace package (which has no __init__.py
of its own, so other installed plugins stay visible). `config` registers the schema and
`sweeper` is Hydra's light entry; the sweep itself loads only when one runs.
"""
