"""A LightningDataModule whose splits live on the training device as uint8 tensors.

Batches are sliced, converted, augmented and normalized on that device, so there is no per-image
decoding and no worker process between the data and the model.
"""

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch import Tensor

from cifar_sweep import sources
from cifar_sweep.augment import build_augment
from cifar_sweep.errors import UserError


class DeviceBatches:
    """An epoch of (images, labels) batches from device-resident uint8 tensors."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        mean: Tensor,
        std: Tensor,
        augment: Callable | None,
        shuffle: bool,
        seed: int,
        channels_last: bool,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.x, self.y, self.batch_size, self.drop_last = x, y, batch_size, drop_last
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.augment, self.shuffle, self.channels_last = augment, shuffle, channels_last
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator(device=x.device).manual_seed(seed)

    def __len__(self) -> int:
        per_rank = len(self.x) / self.world_size
        return (
            int(per_rank // self.batch_size)
            if self.drop_last
            else math.ceil(per_rank / self.batch_size)
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, device=self.x.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.x.device)
        order = order[self.rank :: self.world_size]
        for i in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[i : i + self.batch_size]
            xb = self.x[idx].float().div_(255)
            if self.augment is not None:
                xb = self.augment(xb, self.generator)
            xb = (xb - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]


class ImageDataModule(L.LightningDataModule):
    """Train / validation / test splits of `dataset`, split once with `dataset.split_seed`."""

    def __init__(self, cfg, *, seed: int, channels_last: bool, fold: int | None = None):
        super().__init__()
        self.cfg, self.seed, self.channels_last, self.fold = cfg, seed, channels_last, fold
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.classes: list[str] = []
        self._on_device: dict[str, tuple[Tensor, Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = sources.load(self.cfg)
        n = len(data.train_x)
        if not 0 <= self.cfg.val_size < n:
            raise UserError(
                f"dataset.val_size={self.cfg.val_size} must be >= 0 and below the {n} "
                "training images"
            )
        g = torch.Generator().manual_seed(self.cfg.split_seed)
        order = torch.randperm(n, generator=g)
        if self.fold is not None:  # k-fold: validate on the fold-th of k equal parts
            size = n // self.cfg.folds
            val = order[self.fold * size : (self.fold + 1) * size]
            train = torch.cat([order[: self.fold * size], order[(self.fold + 1) * size :]])
        else:
            val, train = order[: self.cfg.val_size], order[self.cfg.val_size :]
        self.splits = {
            "train": (data.train_x[train], data.train_y[train]),
            "val": (data.train_x[val], data.train_y[val]),
            "test": (data.test_x, data.test_y),
        }
        self.classes = data.classes
        if len(self.cfg.mean) != self.channels or len(self.cfg.std) != self.channels:
            raise UserError(f"dataset.mean and dataset.std need {self.channels} values")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.splits["train"][0].shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"][0].shape[1:])

    def _batches(self, split: str, *, train: bool) -> DeviceBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        if split not in self._on_device:  # moved to the device once, reused every epoch
            self._on_device[split] = tuple(t.to(device) for t in self.splits[split])
        x, y = self._on_device[split]
        return DeviceBatches(
            x,
            y,
            batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size,
            mean=torch.tensor(list(self.cfg.mean), device=device),
            std=torch.tensor(list(self.cfg.std), device=device),
            augment=build_augment(self.cfg.augment) if train else None,
            shuffle=train,
            seed=self.seed,
            channels_last=self.channels_last,
            drop_last=train and self.cfg.drop_last,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )

    def train_dataloader(self) -> DeviceBatches:
        return self._batches("train", train=True)

    def val_dataloader(self) -> DeviceBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> DeviceBatches:
        return self._batches("test", train=False)
