"""Activation and weight-initialization choices shared by the small CNNs (`model.activation`,
`model.init`)."""

from torch import nn

from cifar_sweep.errors import UserError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
INITS = {
    "kaiming_normal": nn.init.kaiming_normal_,  # He
    "kaiming_uniform": nn.init.kaiming_uniform_,
    "xavier_normal": nn.init.xavier_normal_,  # Glorot
    "xavier_uniform": nn.init.xavier_uniform_,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"model.activation={name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def init_weights(model: nn.Module, init: str) -> None:
    """Initialize conv and linear weights with `model.init`; biases start at zero."""
    if init not in INITS:
        raise UserError(f"model.init={init!r} is not one of {sorted(INITS)}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and not isinstance(m, nn.LazyLinear):
            INITS[init](m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
