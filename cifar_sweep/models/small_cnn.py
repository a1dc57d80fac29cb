"""The small CNNs of studies S0 (sequential vs two-branch) and S3 (Tiny ImageNet)."""

import torch
from torch import Tensor, nn

from cifar_sweep.models.blocks import init_weights, make_activation
from cifar_sweep.models.norms import make_norm


def conv_block(c_in, c_out, kernel, *, norm, activation, dropout) -> nn.Sequential:
    """conv -> norm -> activation -> dropout -> 2x2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2),
        make_norm(norm, c_out),
        make_activation(activation),
        nn.Dropout(dropout),
        nn.MaxPool2d(2),
    )


class SeqCNN(nn.Sequential):
    """S0 model A: three conv blocks (filters, 2x, 4x channels), then a linear classifier."""

    def __init__(self, *, num_classes, in_channels, filters, activation, dropout, init, norm):
        kw = {"norm": norm, "activation": activation, "dropout": dropout}
        super().__init__(
            conv_block(in_channels, filters, 3, **kw),
            conv_block(filters, 2 * filters, 3, **kw),
            conv_block(2 * filters, 4 * filters, 3, **kw),
            nn.Flatten(),
            nn.LazyLinear(num_classes),
        )
        init_weights(self, init)


class TwoBranchCNN(nn.Module):
    """S0 model B: parallel 3x3 and 5x5 conv blocks, concatenated, then a linear classifier."""

    def __init__(self, *, num_classes, in_channels, filters, activation, dropout, init, norm):
        super().__init__()
        kw = {"norm": norm, "activation": activation, "dropout": dropout}
        self.branch3 = conv_block(in_channels, filters, 3, **kw)
        self.branch5 = conv_block(in_channels, filters, 5, **kw)
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
        init_weights(self, init)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.cat([self.branch3(x), self.branch5(x)], dim=1))


class TinyCNN(nn.Module):
    """S3's Tiny ImageNet CNN: conv blocks (residual where channels match), global average
    pooling, a hidden layer with dropout, and the classifier."""

    def __init__(self, *, num_classes, in_channels, channels, kernel, hidden, dropout, norm):
        super().__init__()
        self.convs = nn.ModuleList()
        c_in = in_channels
        for c_out in channels:
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                    make_norm(norm, c_out),
                )
            )
            c_in = c_out
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            y = conv(x)
            x = nn.functional.max_pool2d((y + x if y.shape == x.shape else y).relu(), 2)
        return self.head(x)
