"""Stop a run whose training loss is no longer finite: it has diverged, and more steps are waste."""

import lightning as L
import torch

from cifar_sweep.errors import UserError

EVERY = 20  # steps between checks: each check waits for the device, so not every step


class StopOnNonFinite(L.Callback):
    """Raise "diverged: train/loss=nan at epoch k" within EVERY steps of the first non-finite
    training loss, and at the end of every epoch. Flags stay on the device between checks."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.nan = self.inf = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        nan, inf = torch.isnan(loss), torch.isinf(loss)
        self.nan = nan if self.nan is None else self.nan | nan
        self.inf = inf if self.inf is None else self.inf | inf
        if (batch_idx + 1) % EVERY == 0 or batch_idx + 1 == trainer.num_training_batches:
            if bool(self.nan | self.inf):
                value = "nan" if self.nan else "inf"
                raise UserError(f"diverged: train/loss={value} at epoch {trainer.current_epoch}")
