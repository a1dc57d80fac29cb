"""Augmentation of whole batches on the batch's device (the airbench approach): no PIL, no workers.

Each op takes a float batch (N, C, H, W) with pixels in [0, 1] and a torch.Generator on the same
device, and draws its randomness per image.
"""

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from cifar_sweep.errors import UserError


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def crop(x: Tensor, g: torch.Generator, *, padding: int) -> Tensor:
    """Random crop of the original size from the image zero-padded by `padding` on every side."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def flip(x: Tensor, g: torch.Generator, *, p: float) -> Tensor:
    """Horizontal flip of each image with probability p."""
    mask = torch.rand(x.shape[0], generator=g, device=x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def _affine(x: Tensor, angle: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Rotate (radians), shift (fraction of the size) and zoom each image; zeros outside."""
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0] * 2], 1), torch.stack([sin, cos, shift[:, 1] * 2], 1)],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def rotation(x: Tensor, g: torch.Generator, *, degrees: float) -> Tensor:
    """Rotation by an angle drawn uniformly from [-degrees, degrees]."""
    n = x.shape[0]
    angle = _uniform(n, -degrees, degrees, g, x.device) * math.pi / 180
    return _affine(x, angle, torch.zeros(n, 2, device=x.device), torch.ones(n, device=x.device))


def translate(x: Tensor, g: torch.Generator, *, fraction: float) -> Tensor:
    """Shift by up to `fraction` of the width and height."""
    n = x.shape[0]
    shift = _uniform(2 * n, -fraction, fraction, g, x.device).view(n, 2)
    return _affine(x, torch.zeros(n, device=x.device), shift, torch.ones(n, device=x.device))


def zoom(x: Tensor, g: torch.Generator, *, low: float, high: float) -> Tensor:
    """Zoom by a factor drawn from [low, high] (>1 zooms in)."""
    n = x.shape[0]
    scale = _uniform(n, low, high, g, x.device)
    return _affine(x, torch.zeros(n, device=x.device), torch.zeros(n, 2, device=x.device), scale)


def cutout(x: Tensor, g: torch.Generator, *, size: int) -> Tensor:
    """Zero a size x size square at a random centre of each image (DeVries & Taylor 2017),
    clipped where it overhangs the border; an even size puts the centre below and right of
    the middle."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=g, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=g, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None] - cy + size // 2  # 0..size-1 inside
    xs = torch.arange(w, device=x.device)[None, None, :] - cx + size // 2
    inside = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
    return x.masked_fill(inside[:, None], 0.0)


def color_jitter(
    x: Tensor, g: torch.Generator, *, brightness: float, contrast: float, saturation: float
) -> Tensor:
    """Scale brightness, contrast and saturation by factors drawn from [1 - a, 1 + a]."""
    n = x.shape[0]

    def factor(a: float) -> Tensor:
        return _uniform(n, 1 - a, 1 + a, g, x.device)[:, None, None, None]

    x = x * factor(brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(contrast) + mean
    if x.shape[1] == 3:  # luma weights as Python numbers: a weight tensor would be a host copy
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * factor(saturation) + gray
    return x.clamp(0, 1)


OPS: dict[str, Callable[..., Tensor]] = {
    "crop": crop,
    "flip": flip,
    "rotation": rotation,
    "translate": translate,
    "zoom": zoom,
    "cutout": cutout,
    "color_jitter": color_jitter,
}


def build_augment(spec: dict) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """Chain the ops named in `dataset.augment` ({name: {param: value}}), checking every name."""
    steps = []
    for name, params in (spec or {}).items():
        if params is None:  # dataset.augment.flip=null switches an op off
            continue
        if name not in OPS:
            raise UserError(f"dataset.augment.{name}: unknown; choose from {list(OPS)}")
        expected = set(inspect.signature(OPS[name]).parameters) - {"x", "g"}
        if set(params) != expected:
            raise UserError(
                f"dataset.augment.{name} takes exactly {sorted(expected)}, got {sorted(params)}"
            )
        steps.append((OPS[name], dict(params)))
    if not steps:
        return None

    def augment(x: Tensor, g: torch.Generator) -> Tensor:
        for op, params in steps:
            x = op(x, g, **params)
        return x

    return augment
