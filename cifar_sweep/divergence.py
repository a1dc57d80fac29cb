"""One divergence rule: a run has diverged when its validation or test loss is not finite, or
its training loss is not finite or above `trainer.max_loss`. A diverged run fails with
"diverged: val/loss=nan at epoch 0", so a sweep never ranks the chance-level accuracy of NaN
logits (they predict one class) as a result.

Hand-written rather than Lightning's EarlyStopping(check_finite=True): that one watches a
single metric, only when early stopping is on, and ends the run as a success.
"""

import math

import lightning as L
import torch

from cifar_sweep.errors import UserError

EVERY = 20  # steps between looks at the training loss


def diverged(name: str, value: float, max_loss: float | None) -> bool:
    """Whether a logged loss says the run has diverged."""
    too_high = name == "train/loss" and max_loss is not None and value > max_loss
    return not math.isfinite(value) or too_high


def raise_if(name: str, value: float, *, max_loss: float | None, epoch: int) -> None:
    if diverged(name, value, max_loss):
        raise UserError(f"diverged: {name}={value:.3g} at epoch {epoch}")


def raise_if_diverged(metrics: dict[str, float], *, max_loss: float | None, epoch: int) -> None:
    """The last check after fit and test, on every logged loss (each seed and fold runs it)."""
    for name in sorted(k for k in metrics if k.endswith("loss")):
        raise_if(name, metrics[name], max_loss=max_loss, epoch=epoch)


def check_max_loss(max_loss) -> float | None:
    ok = max_loss is None or (
        isinstance(max_loss, int | float) and not isinstance(max_loss, bool) and max_loss > 0
    )
    if not ok:
        raise UserError(f"trainer.max_loss={max_loss} must be null or a number > 0")
    return max_loss


class StopOnDivergence(L.Callback):
    """Raise "diverged: train/loss=... at epoch k" soon after the epoch's mean training loss so
    far turns non-finite or passes `max_loss`, and "diverged: val/loss=nan ..." after a
    validation whose loss is not finite.

    The running sum stays on the device. Every EVERY steps its mean is copied to the host without
    waiting; the copy is read once the device has done it (a CUDA event), so a GPU run never
    stalls for this check, and a diverged run stops within about 2 x EVERY steps. The end of each
    epoch waits for it, once.
    """

    def __init__(self, *, max_loss: float | None):
        self.max_loss = check_max_loss(max_loss)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.total = torch.zeros((), device=module.device)
        cuda = module.device.type == "cuda"
        self.seen = torch.zeros((), pin_memory=cuda)
        self.copied = torch.cuda.Event() if cuda else None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if outputs is None:  # a skipped step
            return
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        self.total += loss.float()
        steps = batch_idx + 1
        if steps == trainer.num_training_batches:
            self._raise_if("train/loss", self._mean(trainer, steps), trainer)  # epoch end: wait
        elif steps % EVERY == 0:
            if trainer.world_size > 1:  # every rank looks at the same step: all stop together
                self._raise_if("train/loss", self._mean(trainer, steps), trainer)
            elif self.copied is None:  # CPU: nothing to overlap
                self._raise_if("train/loss", self.total.item() / steps, trainer)
            elif self.copied.query():  # the last copy has landed: read it, start the next one
                self._raise_if("train/loss", self.seen.item(), trainer)
                self.seen.copy_(self.total / steps, non_blocking=True)
                self.copied.record()

    def _mean(self, trainer: L.Trainer, steps: int) -> float:
        """The mean training loss so far, over every rank: a rank that raised alone would leave
        the others waiting for it at their next gradient exchange."""
        return float(trainer.strategy.reduce(self.total / steps, reduce_op="mean"))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not trainer.sanity_checking:
            self._raise_if("val/loss", float(loss), trainer)

    def _raise_if(self, name: str, value: float, trainer: L.Trainer) -> None:
        raise_if(name, value, max_loss=self.max_loss, epoch=trainer.current_epoch)
