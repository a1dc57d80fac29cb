from torch import nn

from cifar_sweep.errors import UserError

NORMS = {
    "batch": nn.BatchNorm2d,
    "none": lambda channels: nn.Identity(),
}


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalization layer named by `model.norm` for a conv output with `channels` channels."""
    if norm not in NORMS:
        raise UserError(f"model.norm={norm!r} is not one of {sorted(NORMS)}")
    return NORMS[norm](channels)
