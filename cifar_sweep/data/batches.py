"""An epoch of batches on the training device: sliced, converted, augmented and normalized there
(the airbench approach), each rank of a run on several devices taking its shard."""

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor


def rank_seed(seed: int, *, rank: int, epoch: int) -> int:
    """The seed of one rank's augmentation and dropout draws in one epoch: no two (seed, epoch,
    rank) share one, below 100,003 epochs and 1,000 ranks."""
    return (seed * 100_003 + epoch) * 1_000 + rank


class DeviceBatches:
    """An epoch of (images, labels) batches from uint8 tensors on the training device, or, with
    `device`, from host tensors, each batch gathered on the host and copied to `device`.

    One rank draws the data order and its augmentations from one generator seeded with `seed`.
    Several ranks share the order (each takes its shard of one permutation, so the shards never
    overlap) and draw their augmentations and dropout from generators of their own, seeded anew
    each epoch from the seed, the rank and `epoch()`: a resumed run draws what an uninterrupted
    one draws, with no rank's state in the checkpoint.
    """

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
        epoch: Callable[[], int] = lambda: 0,
        device: torch.device | None = None,
        rows: Tensor | None = None,
    ):
        self.x, self.y, self.batch_size, self.drop_last = x, y, batch_size, drop_last
        # the split's rows of x and y (None: all), gathered batch by batch: never a whole copy
        self.rows = None if rows is None else rows.to(x.device)
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.augment, self.shuffle, self.channels_last = augment, shuffle, channels_last
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.device = device  # None: x and y are on the training device already
        self.generator = torch.Generator(device=device or x.device).manual_seed(seed)
        several = world_size > 1 and shuffle
        self.draws = torch.Generator(device=device or x.device) if several else self.generator

    def __len__(self) -> int:
        per_rank = self.per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def per_rank(self) -> int:
        """This rank's images an epoch. Training: every rank the same number (a shard one short
        repeats an image), as DDP needs the same steps on every rank; evaluation: each image
        once, so a shard may be one shorter, and its batch count too."""
        n, size = self._count(), self.world_size
        return math.ceil(n / size) if self.shuffle else len(range(self.rank, n, size))

    def _count(self) -> int:
        return len(self.x) if self.rows is None else len(self.rows)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, on = self._count(), self.generator.device
        if self.draws is not self.generator:  # this rank's own draws, from where this epoch is
            seed = rank_seed(self.seed, rank=self.rank, epoch=self.epoch())
            self.draws.manual_seed(seed)
            torch.manual_seed(seed)  # dropout: the global generators, each rank its own
        if self.shuffle:  # drawn on the training device either way: one data order per seed
            order = torch.randperm(n, device=on, generator=self.generator)
        else:
            order = torch.arange(n, device=on)
        if self.shuffle and n % self.world_size:  # pad to equal shards, as DistributedSampler
            order = torch.cat([order, order[: self.world_size - n % self.world_size]])
        order = order[self.rank :: self.world_size].to(self.x.device)  # host: one copy an epoch
        for i in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[i : i + self.batch_size]
            idx = idx if self.rows is None else self.rows[idx]
            xb, yb = (self.x[idx], self.y[idx]) if self.device is None else self._copied(idx)
            xb = xb.float().div_(255)
            if self.augment is not None:
                xb = self.augment(xb, self.draws)
            xb = (xb - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def _copied(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The batch gathered on the host, into pinned memory when the device is CUDA (torch's
        pinned allocator caches its blocks and waits for the copy before reusing one), then
        copied without blocking the host."""
        pin = self.device.type == "cuda"
        out = []
        for t in (self.x, self.y):
            batch = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=pin)
            torch.index_select(t, 0, idx, out=batch)
            out.append(batch.to(self.device, non_blocking=pin))
        return out[0], out[1]
