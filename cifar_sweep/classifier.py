import functools
import time

import lightning as L
import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR, SequentialLR
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from cifar_sweep.errors import UserError

LENGTH_KEYS = ("T_max", "total_steps")  # CosineAnnealingLR's and OneCycleLR's schedule length


def lr_schedule(
    optimizer: torch.optim.Optimizer,
    scheduler: functools.partial,
    *,
    monitor: str | None,
    interval: str,
    warmup_epochs: int,
    max_epochs: int,
    steps_per_epoch: int,
) -> dict:
    """Lightning's lr_scheduler entry: `scheduler` after a linear warm-up from lr/10, stepped per
    epoch or per optimizer step (`interval`). A length key left null (LENGTH_KEYS) spans the run
    after the warm-up, so no one has to subtract by hand."""
    if interval not in ("epoch", "step"):
        raise UserError(f"scheduler.interval={interval} must be epoch or step")
    if monitor and (warmup_epochs or interval == "step"):
        raise UserError(
            "scheduler.warmup_epochs must be 0 and scheduler.interval epoch with a plateau schedule"
        )
    per_epoch = steps_per_epoch if interval == "step" else 1
    warmup = warmup_epochs * per_epoch
    length = max(max_epochs * per_epoch - warmup, 1)  # a quick run may end inside the warm-up
    unset = {k: length for k in LENGTH_KEYS if scheduler.keywords.get(k, 0) is None}
    schedule = scheduler(optimizer=optimizer, **unset)
    if warmup:
        ramp = LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
        schedule = SequentialLR(optimizer, [ramp, schedule], [warmup])
    return {"scheduler": schedule, "interval": interval} | ({"monitor": monitor} if monitor else {})


class Classifier(L.LightningModule):
    """Cross-entropy classification with accuracy, timing and learning-rate logging."""

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer,
        scheduler,
        scheduler_monitor: str | None,
        scheduler_interval: str,
        warmup_epochs: int,
        num_classes: int,
        label_smoothing: float,
    ):
        super().__init__()
        self.model = model
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.scheduler_monitor, self.warmup_epochs = scheduler_monitor, warmup_epochs
        self.scheduler_interval = scheduler_interval
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        # evaluation losses as metrics: on N devices each is the mean over the whole split (a
        # per-rank mean, synced, would weigh a shorter shard's images more)
        self.val_loss = MeanMetric(nan_strategy="disable")  # a NaN loss must show: diverged
        self.test_loss = MeanMetric(nan_strategy="disable")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints: a resumed run knows its best
        self.epochs_s = 0.0  # this process's epochs, training and validation: time/epochs_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_acc.update(logits, y)  # the epoch value only: no per-batch compute
        # synced: every rank's divergence check and plateau schedule sees the same number
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        self._images += len(y)
        return loss

    def on_train_epoch_start(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self._images, self._t0 = 0, time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.trainer.num_training_batches - 1:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            # training time only: validation runs before on_train_epoch_end
            self._epoch_s = time.perf_counter() - self._t0

    def on_train_epoch_end(self) -> None:
        self.epochs_s += time.perf_counter() - self._t0  # validation has run by now
        # on N devices: the slowest rank's time, and the images of all ranks together
        self.log("time/epoch_s", self._epoch_s, sync_dist=True, reduce_fx="max")
        self.log("time/images_per_s", self._images / self._epoch_s, sync_dist=True, reduce_fx="sum")

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an evaluation batch. A compiled model compiles one graph for every batch
        size (eval_batch_size, a last partial batch) instead of one per size."""
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return self(x)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.evaluate(x)
        self.val_acc.update(logits, y)
        self.val_loss.update(self.loss(logits, y), weight=len(y))
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.val_acc_best(acc)
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.evaluate(x)
        self.test_acc.update(logits, y)
        self.test_loss.update(self.loss(logits, y), weight=len(y))
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def predict_step(self, batch, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return self.evaluate(x).float().softmax(dim=1).cpu(), y.cpu()

    def configure_optimizers(self):
        optimizer = self.optimizer_fn(params=self.parameters())
        epochs = self.trainer.max_epochs
        schedule = lr_schedule(
            optimizer,
            self.scheduler_fn,
            monitor=self.scheduler_monitor,
            interval=self.scheduler_interval,
            warmup_epochs=self.warmup_epochs,
            max_epochs=epochs,
            steps_per_epoch=max(int(self.trainer.estimated_stepping_batches) // epochs, 1),
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}
