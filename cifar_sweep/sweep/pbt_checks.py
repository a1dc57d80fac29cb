"""The checks of a PBT sweep (sweeper=pbt), before the study opens and before Optuna loads: its
keys' values, and what PBT cannot change in the middle of a member's training, each refused in
one line.

A member's values change between its intervals while its weights go on, so only a value that a
checkpoint can go on with may be searched: the optimizer's (set on its param groups at an
interval's start, changes.py) and the augmentation's strengths (read afresh by each interval). A
key that changes the model's shape or the data split would put the copied checkpoint under
another model or another split.
"""

from omegaconf import DictConfig, OmegaConf

from cifar_sweep.errors import UserError
from cifar_sweep.values import is_int, is_number

MUTABLE = ("optimizer.lr", "optimizer.momentum", "optimizer.weight_decay")
MUTABLE_UNDER = "dataset.augment."
VALUES = {
    "population": ("an integer >= 2", lambda v: is_int(v) and v >= 2),
    "interval_epochs": ("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "quantile": ("a number in (0, 0.5]", lambda v: is_number(v) and 0 < v <= 0.5),
    "resample_p": ("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
    "seed": ("an integer", is_int),
    "perturb": (
        "a list of numbers > 0, e.g. [1.2, 0.8]",
        lambda v: isinstance(v, list) and v and all(is_number(f) and f > 0 for f in v),
    ),
}


def check_pbt(cfg: DictConfig, swept: list[str]) -> None:
    """Nothing without hydra.sweeper.pbt; else its values, then the sweep's keys (`swept`) and
    settings PBT cannot work with."""
    node = cfg.hydra.sweeper.get("pbt")
    if not node:
        return
    pbt = OmegaConf.to_container(node, resolve=True)
    for key, (rule, ok) in VALUES.items():
        if not ok(pbt.get(key)):
            raise UserError(f"hydra.sweeper.pbt.{key}={pbt.get(key)} must be {rule}")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if pbt.get("max_epochs") != epochs:  # it decides at the last interval's end
        raise UserError(
            f"hydra.sweeper.pbt.max_epochs={pbt.get('max_epochs')} must be trainer.max_epochs "
            f"({epochs}), each member's epochs: leave it as ${{trainer.max_epochs}}"
        )
    for key in swept:
        if key not in MUTABLE and not key.startswith(MUTABLE_UNDER):
            raise UserError(
                f"sweeper=pbt: {key} cannot change in the middle of a member's training (the "
                f"model's shape and the data split stay its checkpoint's); PBT may search "
                f"{', '.join(MUTABLE)} and {MUTABLE_UNDER}*"
            )
    _settings(cfg)


def _settings(cfg: DictConfig) -> None:
    """What a PBT sweep refuses besides its search space, each with the fix."""
    sweeper = cfg.hydra.sweeper
    pruner = OmegaConf.select(cfg, "hydra.sweeper.pruner._target_", default=None)
    schedule = str(OmegaConf.select(cfg, "scheduler.fn._target_", default=None))

    def chosen(group: str) -> str:
        return OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None) or "?"

    refused = [
        (
            pruner not in (None, "optuna.pruners.NopPruner"),
            f"pruner={chosen('pruner')}",
            "PBT ends each member's intervals itself; use pruner=none",
        ),
        (
            not schedule.endswith(".ConstantLR") or bool(cfg.scheduler.warmup_epochs),
            f"scheduler={chosen('scheduler')}",
            "PBT sets the learning rate at each interval, so the schedule is the one it finds; "
            "use scheduler=constant (warmup_epochs=0)",
        ),
        (
            not isinstance(cfg.objective, str),
            f"objective={cfg.objective if isinstance(cfg.objective, str) else list(cfg.objective)}",
            "PBT ranks members by one objective",
        ),
        (cfg.repeats > 1, f"repeats={cfg.repeats}", "a member is one run; use repeats=1"),
        (
            OmegaConf.select(cfg, "trainer.early_stopping.patience") is not None,
            "trainer.early_stopping.patience",
            "a member trains every epoch of trainer.max_epochs (its patience would come with "
            "the checkpoint it copies); set it to null",
        ),
        (
            bool(cfg.dataset.get("folds")),
            f"dataset.folds={cfg.dataset.get('folds')}",
            "a member is one run, not one per fold",
        ),
        (
            bool(sweeper.get("custom_search_space")),
            f"hydra.sweeper.custom_search_space={sweeper.get('custom_search_space')}",
            "its keys cannot be checked for PBT; list them in hydra.sweeper.params",
        ),
        (bool(sweeper.get("enqueue")), "hydra.sweeper.enqueue", "not with PBT yet"),
        (bool(sweeper.get("warm_start")), "hydra.sweeper.warm_start", "not with PBT yet"),
    ]
    for wrong, what, why in refused:
        if wrong:
            raise UserError(f"sweeper=pbt with {what}: {why}")
