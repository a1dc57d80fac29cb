"""The Optuna sweeper of cifar_sweep: hydra-optuna-sweeper with pruning, resume and workers.

Hydra only loads sweepers from the `hydra_plugins` namespace package (which has no __init__.py
of its own, so other installed plugins stay visible).
"""
