"""The batch augmentations keep shapes, dtype and labels, and do what their names say."""

import pytest
import torch

from cifar_sweep.data.augment import OPS, build_augment, crop, cutout, flip
from cifar_sweep.data.datamodule import DeviceBatches
from cifar_sweep.errors import UserError

PARAMS = {
    "crop": {"padding": 4},
    "flip": {"p": 0.5},
    "rotation": {"degrees": 15},
    "translate": {"fraction": 0.1},
    "zoom": {"low": 0.9, "high": 1.1},
    "cutout": {"size": 8},
    "color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
}


def batch(n: int = 64, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_every_op_is_configured_here():
    assert set(PARAMS) == set(OPS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_op_keeps_shape_and_dtype_and_changes_pixels(name):
    x = batch()
    out = OPS[name](x, torch.Generator().manual_seed(1), **PARAMS[name])
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_crop_is_a_window_of_the_zero_padded_image():
    x, p = batch(32, 8), 2
    out = crop(x, torch.Generator().manual_seed(1), padding=p)
    padded = torch.nn.functional.pad(x, (p,) * 4)
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert hits, f"image {i} is not a crop of its padded input"
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets are drawn per image, not once per batch


def test_flip_mirrors_about_half_the_images_and_nothing_else():
    x = batch(200, 8)
    out = flip(x, torch.Generator().manual_seed(1), p=0.5)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140


def test_cutout_zeroes_one_square_per_image():
    out = cutout(torch.ones(16, 3, 16, 16), torch.Generator().manual_seed(1), size=5)
    zeros = (out == 0).all(1).sum((1, 2))
    assert (zeros > 0).all() and (zeros <= 25).all()


def test_device_batches_keep_labels_with_their_images():
    # image i is filled with the value i, its label is i: augmentation must not mix them up
    n = 50
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
    y = torch.arange(n)
    aug = build_augment({"flip": {"p": 0.5}})
    batches = DeviceBatches(
        x,
        y,
        batch_size=16,
        mean=torch.zeros(1),
        std=torch.ones(1) / 255,
        augment=aug,
        shuffle=True,
        seed=0,
        channels_last=False,
    )
    seen = []
    for xb, yb in batches:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (1, 8, 8)
        assert torch.equal(xb[:, 0, 0, 0].round().long(), yb)
        seen += yb.tolist()
    assert sorted(seen) == list(range(n)) and seen != list(range(n))
    assert len(batches) == 4
    # drop_last: three full batches, each epoch a different two images left out
    batches.drop_last = True
    epochs = [[yb.tolist() for _, yb in batches] for _ in range(2)]
    assert len(batches) == 3 and all(len(e) == 3 and {len(b) for b in e} == {16} for e in epochs)
    left_out = [set(range(n)) - {i for b in e for i in b} for e in epochs]
    assert all(len(s) == 2 for s in left_out) and left_out[0] != left_out[1]


def test_unknown_op_or_param_names_the_key():
    with pytest.raises(UserError, match=r"dataset\.augment\.blur"):
        build_augment({"blur": {"sigma": 1}})
    with pytest.raises(UserError, match=r"dataset\.augment\.crop"):
        build_augment({"crop": {"pad": 4}})
