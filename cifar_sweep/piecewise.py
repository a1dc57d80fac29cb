"""scheduler=piecewise: param-group values that change at given epochs, each held until the next
segment sets it again: the schedule a PBT member trained with, replayed from scratch
(sweep/pbt_replay.py writes the segments).

Hand-written: torch's schedulers change the learning rate alone (MultiStepLR by one factor), and
a PBT member's momentum and weight decay change with its learning rate.
"""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

KEYS = ("lr", "momentum", "weight_decay")  # what a segment may set, as param groups name them


class Piecewise(LRScheduler):
    """From each segment's `epoch` on (0-based), its values on every param group; stepped once
    per epoch (scheduler.interval: epoch)."""

    def __init__(self, optimizer: Optimizer, segments, last_epoch: int = -1):
        self.segments = sorted((dict(s) for s in segments), key=lambda s: s.get("epoch", -1))
        for segment in self.segments:
            epoch, wrong = segment.get("epoch"), set(segment) - {"epoch", *KEYS}
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0 or wrong:
                raise ValueError(
                    f"segment {segment}: each needs an epoch (an integer >= 0) and sets only "
                    f"{', '.join(KEYS)}"
                )
        super().__init__(optimizer, last_epoch)

    def values(self, epoch: int) -> dict:
        """The values in force at `epoch`: each key's from its latest segment at or before it."""
        found = {}
        for segment in self.segments:
            if segment["epoch"] <= epoch:
                found |= {k: v for k, v in segment.items() if k != "epoch"}
        return found

    def get_lr(self) -> list[float]:
        values = self.values(self.last_epoch)
        for group in self.optimizer.param_groups:  # torch sets only the lr from what we return
            group.update({k: v for k, v in values.items() if k != "lr"})
        return [values.get("lr", group["lr"]) for group in self.optimizer.param_groups]
