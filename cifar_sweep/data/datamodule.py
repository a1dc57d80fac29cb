"""A LightningDataModule whose splits live on the training device as uint8 tensors.

Batches are sliced, converted, augmented and normalized on that device, so there is no per-image
decoding and no worker process between the data and the model. Splits too large for the device
stay in host memory (`dataset.placement`, placement.py): each batch is gathered there through
the split's rows of the tensors as loaded (the cache memory-mapped, so the processes of a
machine share its pages and none holds a copy), copied over as uint8, and converted and
augmented on the device as before.
"""

import logging
import math

import lightning as L
import torch
from torch import Tensor

from cifar_sweep.data import placement, sources
from cifar_sweep.data.augment import build_augment
from cifar_sweep.data.batches import DeviceBatches
from cifar_sweep.data.dataset_checks import val_count
from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)


def _which(mean, std) -> str:
    """Which normalization the run uses, beside the cache's measured figures in the log."""
    if mean is not None and std is not None:
        return " (dataset.mean and dataset.std as configured, not the measured ones)"
    if mean is None and std is None:
        return " (the training images' own, measured)"
    return " (measured where dataset.mean or dataset.std is null)"


def fold_split(order: Tensor, *, folds: int, fold: int) -> tuple[Tensor, Tensor]:
    """k-fold's training and validation indices for `fold` of `folds`: `order` cut into `folds`
    parts whose sizes differ by at most one (the first n % k parts one larger, as scikit-learn's
    KFold), so every training image validates in exactly one fold and trains in the others; no
    remainder is left out of validation."""
    if folds > len(order):
        raise UserError(
            f"dataset.folds={folds} is more than the {len(order)} training images: every fold "
            "needs at least one image to validate on"
        )
    parts = list(torch.tensor_split(order, folds))
    val = parts.pop(fold)
    return torch.cat(parts), val


def _gathered(x: Tensor, y: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
    return (x, y) if rows is None else (x[rows], y[rows])


def _nbytes(split: tuple[Tensor, Tensor, Tensor | None]) -> int:
    """The bytes of a split's images and labels, gathered."""
    x, y, rows = split
    count = len(x) if rows is None else len(rows)
    return sum(count * t.element_size() * math.prod(t.shape[1:]) for t in (x, y))


class ImageDataModule(L.LightningDataModule):
    """Train / validation / test splits of `dataset`, split once with `dataset.split_seed`."""

    def __init__(self, cfg, *, seed: int, channels_last: bool, fold: int | None = None):
        super().__init__()
        self.cfg, self.seed, self.channels_last, self.fold = cfg, seed, channels_last, fold
        self.data: sources.Splits | None = None  # as loaded: the cache memory-mapped
        self.rows: dict[str, Tensor | None] = {}  # each split's rows of it (test: None, all)
        self.classes: list[str] = []
        self.mean: list[float] = []
        self.std: list[float] = []
        self._on_device: dict[str, tuple[Tensor, Tensor]] = {}
        self._placement: str | None = None  # "device" or "host", chosen when the data first moves
        self._train: DeviceBatches | None = None  # its generator is the data order's state
        self._resumed: dict | None = None  # from a checkpoint, applied when training starts

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        data = sources.load(self.cfg)
        n = len(data.train_x)
        g = torch.Generator().manual_seed(self.cfg.split_seed)
        order = torch.randperm(n, generator=g)
        if self.fold is not None:
            train, val = fold_split(order, folds=self.cfg.folds, fold=self.fold)
        else:
            count = val_count(self.cfg.val_size, n)
            val, train = order[:count], order[count:]
        # rows, not copies: the processes of a machine share one memory-mapped cache's pages
        self.data, self.rows = data, {"train": train, "val": val, "test": None}
        self.classes = data.classes
        self.mean, self.std = self._normalization(data)

    def _no_empty_epoch(self, batches: DeviceBatches) -> None:
        """A training epoch with no batch would train nothing and log no validation, silently."""
        if self.cfg.drop_last and not len(batches):
            raise UserError(
                f"dataset.batch_size={self.cfg.batch_size} with dataset.drop_last=true leaves no "
                f"training batch: {batches.per_rank()} training images per device; lower "
                "dataset.batch_size, or set dataset.drop_last=false"
            )

    def _normalization(self, data: sources.Splits) -> tuple[list[float], list[float]]:
        """dataset.mean/std, or where null the training images' own (computed with the cache)."""
        out = []
        for key, measured in (("mean", data.mean), ("std", data.std)):
            given = self.cfg[key]
            if given is not None and len(given) != self.channels:
                raise UserError(
                    f"dataset.{key} has {len(given)} values but the images have "
                    f"{self.channels} channel(s): give {self.channels}, or null to use the "
                    f"training images' own ({', '.join(f'{v:.4f}' for v in measured)})"
                )
            out.append(list(given) if given is not None else measured)
        log.info(
            "dataset: %d classes, %d training, %d validation, %d test images of %s; "
            "normalized with mean %s, std %s%s",
            self.num_classes,
            len(self.rows["train"]),
            len(self.rows["val"]),
            len(data.test_x),
            "x".join(map(str, self.image_shape)),
            [round(v, 4) for v in out[0]],
            [round(v, 4) for v in out[1]],
            _which(self.cfg.mean, self.cfg.std),
        )
        return out[0], out[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.data.train_x.shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.train_x.shape[1:])

    def split(self, name: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """A split's images and labels (all the source's) and its rows of them (None: all)."""
        if name == "test":
            return self.data.test_x, self.data.test_y, None
        return self.data.train_x, self.data.train_y, self.rows[name]

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each split's (images, labels) gathered into tensors of their own: a copy, to look at;
        batches never use it."""
        return {name: _gathered(*self.split(name)) for name in self.rows}

    def _batches(self, split: str, *, train: bool) -> DeviceBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        if self._placement is None:
            need = sum(_nbytes(self.split(name)) for name in self.rows)
            self._placement = placement.choose(self.cfg, need=need, device=device)
        on_host = self._placement == "host"
        x, y, rows = self.split(split)
        if not on_host:  # gathered onto the device once, reused every epoch
            if split not in self._on_device:
                self._on_device[split] = tuple(t.to(device) for t in _gathered(x, y, rows))
            (x, y), rows = self._on_device[split], None
        return DeviceBatches(
            x,
            y,
            batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size,
            mean=torch.tensor(self.mean, device=device),
            std=torch.tensor(self.std, device=device),
            augment=build_augment(self.cfg.augment) if train else None,
            shuffle=train,
            seed=self.seed,
            channels_last=self.channels_last,
            drop_last=train and self.cfg.drop_last,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            epoch=lambda: trainer.current_epoch if trainer else 0,  # read as an epoch starts
            device=device if on_host else None,
            rows=rows,
        )

    def train_dataloader(self) -> DeviceBatches:
        self._train = self._batches("train", train=True)
        self._no_empty_epoch(self._train)
        if self._resumed is not None:  # go on with the data order where the checkpoint left it
            self._restore_generator(self._resumed)
            torch.set_rng_state(self._resumed["rng"])
            if self._resumed.get("cuda_rng") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._resumed["cuda_rng"])
            self._resumed = None
        return self._train

    def _restore_generator(self, saved: dict) -> None:
        """The data order's generator as saved; saved on another kind of device (its state
        fits no other), one drawn from the seed and the epoch, the same on every rerun."""
        generator, state = self._train.generator, saved["generator"].to(torch.uint8)
        here = generator.device.type
        # a checkpoint without "device" came from a run that did not record it: its size tells
        same = saved.get("device", here) == here and state.numel() == generator.get_state().numel()
        if same:
            generator.set_state(state)
            return
        epoch = self.trainer.current_epoch + 1  # restored at an epoch's end: the next one
        generator.manual_seed(self.seed * 100_003 + epoch)  # no two (seed, epoch) pairs share one
        log.info(
            "resume: the data order was drawn on %s, this run is on %s: epoch %d on draws it "
            "from seed %d and the epoch",
            saved.get("device", "another kind of device"),
            here,
            epoch,
            self.seed,
        )

    def state_dict(self) -> dict:
        """What a resumed run needs to draw the same batches and augmentations as an
        uninterrupted one: the train generator's state and device, and torch's global RNGs
        (dropout). Tensors and strings, so the checkpoint loads with weights_only=True."""
        if self._train is None:
            return {}
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {
            "generator": self._train.generator.get_state(),
            "device": self._train.generator.device.type,
            "rng": torch.get_rng_state(),
            "cuda_rng": cuda,
        }

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state or None

    def val_dataloader(self) -> DeviceBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> DeviceBatches:
        return self._batches("test", train=False)
