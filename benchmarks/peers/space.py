"""The NAS space of conf/search_space/nas.yaml for the peers, read from that file alone: the
learning rate (Hydra's sweep syntax, parsed by the stock sweeper's own parser) and the per-layer
choices (our `spaces.per_layer`), suggested define-by-run on any Optuna trial."""

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.config_dir import CONF
from cifar_sweep.sweep import spaces

NAS = CONF / "search_space" / "nas.yaml"


def _spec() -> DictConfig:
    return OmegaConf.load(NAS)


def per_layer(cfg: DictConfig, trial: optuna.trial.Trial) -> None:
    """The per-layer part, as the stock sweeper's `custom_search_space` (its schema has no
    `per_layer` key, so the choices come from the file)."""
    spaces.per_layer(OmegaConf.create({"hydra": {"sweeper": _spec()}}), trial)


def suggest(trial: optuna.trial.Trial) -> list[str]:
    """Suggest the whole space on `trial` (Optuna's script, Ray's OptunaSearch); its overrides."""
    params = [f"{key}={value}" for key, value in _spec().params.items()]
    distributions, _, _ = create_params_from_overrides(params)
    for name, d in distributions.items():
        if isinstance(d, optuna.distributions.FloatDistribution):
            trial.suggest_float(name, d.low, d.high, log=d.log, step=d.step)
        elif isinstance(d, optuna.distributions.IntDistribution):
            trial.suggest_int(name, d.low, d.high, log=d.log, step=d.step)
        else:
            trial.suggest_categorical(name, d.choices)
    per_layer(OmegaConf.create(), trial)
    return [f"{key}={value}" for key, value in trial.params.items()]
