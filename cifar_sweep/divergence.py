"""Stop a run whose training loss is no longer finite: it has diverged, and more steps are waste."""

import lightning as L
import torch

from cifar_sweep.errors import UserError

EVERY = 20  # steps between looks at the flags


class StopOnNonFinite(L.Callback):
    """Raise "diverged: train/loss=nan at epoch k" soon after the first non-finite training loss.

    The flags stay on the device. Every EVERY steps they are copied to the host without waiting;
    the copy is read once the device has done it (a CUDA event), so a GPU run never stalls for
    this check, and a diverged run stops within about 2 x EVERY steps. The end of each epoch
    waits for the flags, once.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.flags = torch.zeros(2, dtype=torch.bool, device=module.device)  # nan, inf
        cuda = module.device.type == "cuda"
        self.seen = torch.zeros(2, dtype=torch.bool, pin_memory=cuda)
        self.copied = torch.cuda.Event() if cuda else None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if outputs is None:  # a skipped step
            return
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        self.flags |= torch.stack([torch.isnan(loss), torch.isinf(loss)])
        if batch_idx + 1 == trainer.num_training_batches:
            self._raise_if(self.flags.cpu(), trainer)  # epoch end: wait once
        elif (batch_idx + 1) % EVERY == 0:
            if self.copied is None:  # CPU: nothing to overlap
                self._raise_if(self.flags.clone(), trainer)
            elif self.copied.query():  # the last copy has landed: read it, start the next one
                self._raise_if(self.seen, trainer)
                self.seen.copy_(self.flags, non_blocking=True)
                self.copied.record()

    @staticmethod
    def _raise_if(flags: torch.Tensor, trainer: L.Trainer) -> None:
        nan, inf = flags.tolist()
        if nan or inf:
            value = "nan" if nan else "inf"
            raise UserError(f"diverged: train/loss={value} at epoch {trainer.current_epoch}")
