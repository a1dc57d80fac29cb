"""Dataset sources decoded once into uint8 tensors, cached under `dataset.cache_dir`.

The cache key hashes the source's files (paths, sizes, modification times), so editing the data
rebuilds the cache and nothing else does.
"""

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cifar_sweep.errors import UserError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
OFFLINE_HINT = (
    "offline, use dataset=cifar10_folder dataset.root=<ImageFolder tree>, e.g. the JPEG copy "
    "unpacked from ../shared/data/cifar10-jpeg.tar.xz"
)


@dataclass
class Splits:
    """Images as uint8 (N, C, H, W) and labels as int64, for the training and test splits."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]


def load(cfg) -> Splits:
    """The splits of the source named by `dataset.source`, from the cache when it is current."""
    if cfg.source == "synthetic":
        return synthetic(cfg)
    root = Path(cfg.root)
    if cfg.source == "cifar10":
        paths = _download_cifar10(root)
        build = lambda: _read_cifar10(root)  # noqa: E731
    elif cfg.source in ("folder", "tiny_imagenet"):
        if cfg.source == "folder":
            files, classes = _folder_files(root)
        else:
            files, classes = _tiny_imagenet_files(root, download=cfg.download)
        paths = [f for split in files.values() for f, _ in split]
        build = lambda: _read_folder(root, files, classes, cfg.image_size)  # noqa: E731
    else:
        raise UserError(
            f"dataset.source={cfg.source!r} is not one of cifar10, folder, tiny_imagenet, synthetic"
        )
    key = _fingerprint(cfg, paths)
    path = Path(cfg.cache_dir) / f"{cfg.source}-{key}.pt"
    if path.exists():
        log.info("dataset: cached tensors %s", path)
        return Splits(**torch.load(path))
    t0 = time.perf_counter()
    splits = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(vars(splits), tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
    log.info("dataset: decoded into %s in %.1f s", path, time.perf_counter() - t0)
    return splits


def _fingerprint(cfg, files: list[Path]) -> str:
    h = hashlib.sha1(f"{cfg.source}|{Path(cfg.root).resolve()}|{cfg.get('image_size')}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _download_cifar10(root: Path) -> list[Path]:
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # no network, a proxy page, a truncated archive...
        msg = f"dataset.root={root}: could not download CIFAR-10 ({e}); {OFFLINE_HINT}"
        raise UserError(msg) from None
    return sorted((root / "cifar-10-batches-py").glob("*_batch*"))


def _read_cifar10(root: Path) -> Splits:
    from torchvision.datasets import CIFAR10

    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(str(root), train=train, download=False)
        out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
    return Splits(**out, classes=list(ds.classes))


def _folder_files(root: Path) -> tuple[dict[str, list[tuple[Path, int]]], list[str]]:
    """(file, label) pairs of train/<class>/ and test/<class>/, labels from sorted class names."""
    if not root.is_dir():
        raise UserError(f"dataset.root={root} does not exist or is not a folder")
    out, classes = {}, None
    for split in ("train", "test"):
        folder = root / split
        names = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
        if not names:
            raise UserError(f"dataset.root={root}: {folder} has no <class>/ folders")
        if classes is not None and names != classes:
            raise UserError(f"dataset.root={root}: test/ classes differ from train/ classes")
        classes = names
        out[split] = [
            (f, label)
            for label, name in enumerate(names)
            for f in sorted((folder / name).rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not out[split]:
            raise UserError(f"dataset.root={root}: {folder} holds no image files")
    return out, classes


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _tiny_imagenet_files(root: Path, *, download: bool) -> tuple[dict, list[str]]:
    """The official tiny-imagenet-200 layout: train/<wnid>/images/*.JPEG for training, and the
    labelled val/images/*.JPEG (val/val_annotations.txt) as our test split."""
    if not (root / "wnids.txt").exists() and download:
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(TINY_IMAGENET_URL, str(root.parent), remove_finished=True)
        except Exception as e:
            raise UserError(
                f"dataset.root={root}: could not download Tiny ImageNet ({e}); offline, unzip "
                "tiny-imagenet-200.zip and set dataset.root=<its folder> dataset.download=false"
            ) from None
    for need in ("wnids.txt", "train", "val/val_annotations.txt"):
        if not (root / need).exists():
            raise UserError(f"dataset.root={root}: no {need} (the tiny-imagenet-200 layout)")
    wnids = sorted((root / "wnids.txt").read_text().split())
    label = {w: i for i, w in enumerate(wnids)}
    names = {}
    if (root / "words.txt").exists():
        for line in (root / "words.txt").read_text().splitlines():
            wnid, _, words = line.partition("\t")
            names[wnid] = words.split(",")[0].strip()
    train = [
        (f, label[w]) for w in wnids for f in sorted((root / "train" / w / "images").glob("*"))
    ]
    test = []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label:
            raise UserError(f"dataset.root={root}: bad line in val_annotations.txt: {line!r}")
        test.append((root / "val" / "images" / fields[0], label[fields[1]]))
    if not train or not test:
        raise UserError(f"dataset.root={root}: no training or validation images")
    return {"train": train, "test": test}, [names.get(w, w) for w in wnids]


def _read_folder(root: Path, files: dict, classes: list[str], image_size: int | None) -> Splits:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    def decode(path: Path, mode: ImageReadMode) -> Tensor:
        try:
            return decode_image(str(path), mode=mode)
        except RuntimeError:
            raise UserError(f"dataset.root={root}: corrupt or unsupported image {path}") from None

    first = decode(files["train"][0][0], ImageReadMode.UNCHANGED)
    mode = ImageReadMode.GRAY if first.shape[0] == 1 else ImageReadMode.RGB

    def read(path: Path) -> Tensor:
        img = decode(path, mode)
        return resize(img, [image_size, image_size], antialias=True) if image_size else img

    out = {}
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for split in ("train", "test"):
            images = list(pool.map(read, [f for f, _ in files[split]]))
            shapes = {tuple(im.shape) for im in images}
            if len(shapes) > 1:
                raise UserError(
                    f"dataset.root={root}: {split}/ images differ in size {sorted(shapes)[:3]}; "
                    "set dataset.image_size to resize them"
                )
            out[f"{split}_x"] = torch.stack(images)
            out[f"{split}_y"] = torch.tensor([y for _, y in files[split]], dtype=torch.int64)
    return Splits(**out, classes=classes)


def synthetic(cfg) -> Splits:
    """A learnable set: each class is a smooth colour template; images add Gaussian noise."""
    g = torch.Generator().manual_seed(cfg.split_seed)
    k, c, s = cfg.num_classes, cfg.channels, cfg.image_size
    coarse = torch.rand(k, c, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(s, s), mode="bilinear")

    def make(per_class: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(k).repeat_interleave(per_class)
        x = templates[y] + cfg.noise * torch.randn(len(y), c, s, s, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = make(cfg.train_per_class)
    test_x, test_y = make(cfg.test_per_class)
    return Splits(train_x, train_y, test_x, test_y, [f"class{i}" for i in range(k)])
