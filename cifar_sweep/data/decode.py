"""An image tree decoded into uint8 tensors, each image written into its split's tensor.

Channels follow the whole tree (its file headers are read first): one colour image makes every
image RGB, and each conversion is said in the log.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path

import torch
from torch import Tensor

from cifar_sweep.data import tree
from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)


def read_tree(listing: tree.Tree, image_size: int | None) -> dict[str, Tensor]:
    """Decode every image: 1 channel if every image is grayscale, else RGB (grayscale images are
    converted and counted in the log; an alpha channel is dropped, as torchvision's ImageFolder
    does); resized to image_size if given. Each image is written into its split's tensor, so the
    decode takes the decoded size once (a list then torch.stack took it twice)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize, to_dtype

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        headers = {
            split: list(
                pool.map(_header, [p for p, _ in listing.files[split]], repeat(listing.root))
            )
            for split in ("train", "test")
        }
    everything = [h for split in headers.values() for h in split]
    color = any(h[1] for h in everything)
    mode = ImageReadMode.RGB if color else ImageReadMode.GRAY
    _log_conversions(listing, everything, color)
    first_path, _, _, (w, h) = headers["train"][0]
    size = (image_size, image_size) if image_size else (h, w)

    def fill(x: Tensor, i: int, path: str) -> None:
        try:
            img = to_dtype(decode_image(path, mode=mode), torch.uint8, scale=True)  # 16-bit PNGs
        except (RuntimeError, ValueError):
            raise UserError(
                f"dataset.root={listing.root}: corrupt or unsupported image {path}"
            ) from None
        if image_size:
            img = resize(img, list(size), antialias=True)
        elif tuple(img.shape[1:]) != size:
            raise UserError(
                f"{path} is {img.shape[2]}x{img.shape[1]} but {first_path} is {w}x{h}: set "
                f"dataset.image_size=<pixels> (e.g. dataset.image_size={max(w, h)}) to resize "
                "every image to that square size"
            )
        x[i] = img

    out = {}
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for split in ("train", "test"):
            paths = [p for p, _ in listing.files[split]]
            x = torch.empty((len(paths), 3 if color else 1, *size), dtype=torch.uint8)
            list(pool.map(fill, [x] * len(paths), range(len(paths)), paths))  # raises the first
            out[f"{split}_x"] = x
            out[f"{split}_y"] = torch.tensor(
                [y for _, y in listing.files[split]], dtype=torch.int64
            )
    return out


GRAY_BANDS = {"1", "L", "I", "F", "A"}  # PIL's bands of grayscale images, alpha or not


def _header(path: str, root: Path) -> tuple[str, bool, bool, tuple[int, int]]:
    """(path, is it colour, has it alpha, (width, height)), from the file's header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            bands = set(im.getbands())
            return path, not bands <= GRAY_BANDS, "A" in bands, im.size
    except Exception:  # PIL's errors differ by format; the fix is the same
        raise UserError(f"dataset.root={root}: corrupt or unsupported image {path}") from None


def _log_conversions(listing: tree.Tree, headers: list, color: bool) -> None:
    """One line saying which images were converted, so a mixed tree is never silently changed."""
    gray = [h[0] for h in headers if not h[1]] if color else []
    alpha = [h[0] for h in headers if h[2]]
    if gray:
        log.info(
            "dataset: converted %d grayscale images to RGB (the tree has colour images too), "
            "e.g. %s",
            len(gray),
            gray[0],
        )
    if alpha:
        log.info("dataset: dropped the alpha channel of %d images, e.g. %s", len(alpha), alpha[0])
