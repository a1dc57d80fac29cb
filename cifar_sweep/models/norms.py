"""Normalization layers by name (`model.norm`), including S4's detached-statistics BatchNorm."""

import torch
from torch import Tensor, nn

from cifar_sweep.errors import UserError


class DetachedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose batch mean and variance are detached from autograd (study S4).

    The forward output and running statistics equal nn.BatchNorm2d's; only the gradient differs:
    it no longer flows through the batch statistics, which is what makes training diverge.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        xf = x.float()  # statistics in float32, as BatchNorm keeps them under bf16/fp16 autocast
        mean = xf.mean(dim=(0, 2, 3)).detach()
        var = xf.var(dim=(0, 2, 3), unbiased=False).detach()
        with torch.no_grad():  # running statistics exactly as nn.BatchNorm2d keeps them
            n = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
            self.num_batches_tracked += 1
        x_hat = (xf - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        out = x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


NORMS = {
    "batch": nn.BatchNorm2d,
    "detached_batch": DetachedBatchNorm2d,
    "none": lambda channels: nn.Identity(),
}


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalization layer named by `model.norm` for a conv output with `channels` channels."""
    if norm not in NORMS:
        raise UserError(f"model.norm={norm!r} is not one of {sorted(NORMS)}")
    return NORMS[norm](channels)
