"""Job side of a PBT interval that goes on from a checkpoint with other values (`trial.changes`,
contract.trial_overrides): Lightning restores the optimizer's param groups from the checkpoint,
lr, momentum and weight decay included, so the interval's own values are set on every group at
the start of training, after the restore; the scheduler's base rate follows the new lr.

Augmentation strengths need nothing here: each run reads them from its config afresh.
"""

import lightning as L
from omegaconf import DictConfig

PREFIX = "optimizer."


class SetChangedValues(L.Callback):
    """Sets the changed optimizer.* values on the restored optimizer's param groups."""

    def __init__(self, optimizer: DictConfig, changes: list[str]):
        names = [k.removeprefix(PREFIX) for k in changes if k.startswith(PREFIX)]
        self.values = {name: optimizer[name] for name in names}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for name, value in self.values.items():
                    group[name] = value
                if "lr" in self.values and "initial_lr" in group:  # what schedulers start from
                    group["initial_lr"] = self.values["lr"]
        if "lr" not in self.values:
            return
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [self.values["lr"]] * len(config.scheduler.base_lrs)
