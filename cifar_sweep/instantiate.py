"""Objects built from config nodes (`_target_`), limited to the packages we trust."""

from hydra.utils import instantiate

# one whitelist for every _target_ a config may name: models, optimizers and schedulers (torch,
# ours), samplers and pruners (optuna), the sweeper and callbacks (ours), the `logger` and
# `callbacks` groups (Lightning's loggers and callbacks; ours)
TRUSTED = [
    "torch.*",
    "optuna.*",
    "cifar_sweep.*",
    "hydra_plugins.cifar_sweep_optuna.*",
    "lightning.pytorch.loggers.*",
    "lightning.pytorch.callbacks.*",
]


def build(node, **kwargs):
    """hydra.utils.instantiate, limited to TRUSTED targets."""
    return instantiate(node, _execution_whitelist_=TRUSTED, **kwargs)
