"""Conditional search spaces, for hydra.sweeper.custom_search_space (Optuna's define-by-run)."""

import optuna
from omegaconf import DictConfig


def per_layer(cfg: DictConfig, trial: optuna.trial.Trial) -> None:
    """Suggest a layer count, then a value per existing layer for each per-layer key.

    Reads hydra.sweeper.per_layer: {count: model.layers, low: 2, high: 4,
    choices: {channels: [16, 32, 64], kernels: [3, 5]}}; suggests model.channels.<i> etc.
    """
    spec = cfg.hydra.sweeper.per_layer
    n = trial.suggest_int(spec.count, spec.low, spec.high)
    prefix = spec.count.rsplit(".", 1)[0]
    for key, choices in spec.choices.items():
        for i in range(n):
            trial.suggest_categorical(f"{prefix}.{key}.{i}", list(choices))
