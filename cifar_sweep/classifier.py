import time

import lightning as L
import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR, SequentialLR
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from cifar_sweep.errors import UserError


class Classifier(L.LightningModule):
    """Cross-entropy classification with accuracy, timing and learning-rate logging."""

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer,
        scheduler,
        scheduler_monitor: str | None,
        warmup_epochs: int,
        num_classes: int,
        label_smoothing: float,
    ):
        super().__init__()
        self.model = model
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.scheduler_monitor, self.warmup_epochs = scheduler_monitor, warmup_epochs
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints: a resumed run knows its best

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_acc.update(logits, y)  # the epoch value only: no per-batch compute
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
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
        self.log("time/epoch_s", self._epoch_s)
        self.log("time/images_per_s", self._images / self._epoch_s)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", self.loss(logits, y), on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.val_acc_best(acc)
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_acc(logits, y)
        self.log("test/loss", self.loss(logits, y), on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_fn(params=self.parameters())
        scheduler = self.scheduler_fn(optimizer=optimizer)
        if self.warmup_epochs:
            if self.scheduler_monitor:
                raise UserError("scheduler.warmup_epochs must be 0 with a plateau schedule")
            warmup = LinearLR(optimizer, start_factor=0.1, total_iters=self.warmup_epochs)
            scheduler = SequentialLR(optimizer, [warmup, scheduler], [self.warmup_epochs])
        config = {"scheduler": scheduler, "interval": "epoch"}
        if self.scheduler_monitor:
            config["monitor"] = self.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
