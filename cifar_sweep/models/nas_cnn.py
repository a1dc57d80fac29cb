"""The NAS search space's CNN (study S2)."""

from torch import nn

from cifar_sweep.errors import UserError
from cifar_sweep.models.norms import make_norm


class NasCNN(nn.Sequential):
    """The NAS search space's CNN: `layers` blocks of Conv -> norm -> ReLU -> MaxPool(2), then a
    linear head. Block i uses channels[i] and kernels[i]; entries past `layers` are unused."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        layers: int,
        channels: list[int],
        kernels: list[int],
        norm: str,
    ):
        if not 1 <= layers <= min(len(channels), len(kernels)):
            raise UserError(
                f"model.layers={layers} needs 1..{min(len(channels), len(kernels))} "
                "(one entry per layer in model.channels and model.kernels)"
            )
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c_out, k in zip(channels[:layers], kernels[:layers], strict=True):
            blocks += [
                nn.Conv2d(c_in, c_out, k, padding=k // 2),
                make_norm(norm, c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        super().__init__(*blocks, nn.Flatten(), nn.LazyLinear(num_classes))  # size from input
