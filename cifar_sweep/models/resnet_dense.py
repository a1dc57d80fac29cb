"""S1's residual backbone with a dense head."""

from torch import nn

from cifar_sweep.models.norms import make_norm
from cifar_sweep.models.resnet import BasicBlock


class ResNetDense(nn.Sequential):
    """S1: a residual conv backbone (one BasicBlock per stage), global average pooling, then
    `num_layers` dense layers of `units` with dropout; the L2 penalty is optimizer.weight_decay."""

    def __init__(self, *, num_classes, in_channels, widths, num_layers, units, dropout, norm):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            make_norm(norm, widths[0]),
            nn.ReLU(inplace=True),
        ]
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            layers.append(BasicBlock(c_in, c_out, 1 if i == 0 else 2, norm))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        for _ in range(num_layers):
            layers += [nn.Linear(c_in, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            c_in = units
        layers.append(nn.Linear(c_in, num_classes))
        super().__init__(*layers)
