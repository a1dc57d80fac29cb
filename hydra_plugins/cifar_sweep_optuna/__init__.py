"""The Optuna sweeper of cifar_sweep: hydra-optuna-sweeper with pruning, resume and workers.

Hydra only loads sweepers from the `hydra_plugins` namespace package (which has no __init__.py
of its own, so other installed plugins stay visible). Modules named `_*` hold the sweep itself:
Hydra's plugin scan skips them, so they load only when a sweep runs.
"""
