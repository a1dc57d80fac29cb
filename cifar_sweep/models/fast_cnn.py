"""A fast CIFAR-10 network after airbench's published design (Jordan, 2024)."""

from torch import Tensor, nn

from cifar_sweep.models.norms import make_norm


class Scale(nn.Module):
    """Multiply by a constant: airbench scales its logits down instead of its learning rate."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def group(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """conv -> 2x2 max-pool -> norm -> GELU -> conv -> norm -> GELU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        make_norm(norm, c_out),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        make_norm(norm, c_out),
        nn.GELU(),
    )


class FastCNN(nn.Sequential):
    """A 2x2 stem convolution, three conv groups (`widths`), a global max-pool and a linear head
    scaled by `logit_scale`. Without airbench's whitening initialisation, lookahead and test-time
    augmentation: what the runner expresses with its own options."""

    def __init__(self, *, num_classes, in_channels, stem, widths, logit_scale, norm):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 2), nn.GELU()]
        c_in = stem
        for w in widths:
            layers.append(group(c_in, w, norm))
            c_in = w
        layers += [
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, num_classes, bias=False),
            Scale(logit_scale),
        ]
        super().__init__(*layers)
