"""The batch augmentations keep shapes, dtype and labels, and do what their names say."""

import pytest
import torch

from cifar_sweep.data.augment import OPS, build_augment, crop, cutout, flip
from cifar_sweep.data.batches import DeviceBatches
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


def asymmetric(n: int, size: int = 8) -> torch.Tensor:
    """n distinct images, none of which is its own mirror image: a flip always shows."""
    x = batch(n, size)
    assert all(not torch.equal(xi, xi.flip(2)) for xi in x)
    return x


def flipped(x: torch.Tensor, out: torch.Tensor) -> list[bool]:
    """Which outputs are their input mirrored; each must be that or the input unchanged."""
    mirrored = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    return mirrored


def test_flip_with_p_0_flips_no_image_and_with_p_1_every_image():
    x = asymmetric(64)
    assert not any(flipped(x, flip(x, torch.Generator().manual_seed(1), p=0.0)))
    assert all(flipped(x, flip(x, torch.Generator().manual_seed(1), p=1.0)))


def test_flip_with_p_one_half_mirrors_about_half_of_a_large_batch():
    x = asymmetric(2000, 4)
    share = sum(flipped(x, flip(x, torch.Generator().manual_seed(1), p=0.5))) / len(x)
    assert 0.45 < share < 0.55  # 2000 images: the binomial's std is 0.011
    share = sum(flipped(x, flip(x, torch.Generator().manual_seed(1), p=0.2))) / len(x)
    assert 0.15 < share < 0.25


def crop_offsets(x: torch.Tensor, out: torch.Tensor, p: int) -> list[tuple[int, int]]:
    """The (row, column) offset of each output's window in its zero-padded input: exactly one
    window of the padded image must match, pixel for pixel."""
    h, w = x.shape[2:]
    padded = torch.nn.functional.pad(x, (p,) * 4)
    offsets = []
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert len(hits) == 1, f"image {i} is not one window of its padded input: {hits}"
        offsets += hits
    return offsets


def test_crop_is_a_window_of_the_zero_padded_image_at_every_offset_far_edge_included():
    x, p = batch(300, 8), 2
    offsets = crop_offsets(x, crop(x, torch.Generator().manual_seed(1), padding=p), p)
    assert {dy for dy, _ in offsets} == set(range(2 * p + 1))  # 0..4: both edges of the padding
    assert {dx for _, dx in offsets} == set(range(2 * p + 1))
    assert len(set(offsets)) == (2 * p + 1) ** 2  # rows and columns drawn apart, per image


def test_crop_with_padding_0_is_the_identity():
    x = batch(8, 8)
    assert torch.equal(crop(x, torch.Generator().manual_seed(1), padding=0), x)


def test_cutout_zeroes_one_size_by_size_square_per_image_clipped_at_the_border():
    for size in (5, 8):  # an even size too: |offset| <= size // 2 would zero 9 x 9 for 8
        out = cutout(torch.ones(200, 1, 32, 32), torch.Generator().manual_seed(1), size=size)
        whole = 0
        for zero in out[:, 0] == 0:
            rows, cols = zero.any(1).nonzero()[:, 0], zero.any(0).nonzero()[:, 0]
            box = zero[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            assert box.all() and zero.sum() == box.numel()  # one rectangle, nothing else
            assert len(rows) <= size and len(cols) <= size
            inside = 0 < rows[0] and rows[-1] < 31 and 0 < cols[0] and cols[-1] < 31
            if inside:  # away from the border: the whole square
                assert (len(rows), len(cols)) == (size, size)
                whole += 1
        assert whole > 100  # most centres lie far enough inside for the whole square


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("rotation", {"degrees": 0}),
        ("translate", {"fraction": 0}),
        ("zoom", {"low": 1.0, "high": 1.0}),
        ("color_jitter", {"brightness": 0, "contrast": 0, "saturation": 0}),
    ],
)
def test_op_at_its_zero_strength_leaves_the_images_as_they_were(name, params):
    x = batch(16, 8)
    out = OPS[name](x, torch.Generator().manual_seed(1), **params)
    assert torch.allclose(out, x, atol=1e-5)  # resampling on its own grid: float rounding only


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


def test_each_rank_crops_flips_and_drops_out_on_its_own_draws_over_one_shared_order():
    """Two ranks of one run over 40 copies of one image (labels tell them apart): the shards
    split one order between them, while rank 1's crops, flips and dropout at position i are not
    rank 0's; an epoch draws again, and the same (seed, rank, epoch) draws the same, as a resumed
    run must."""
    n = 40
    image = torch.randint(0, 256, (1, 3, 12, 12), generator=torch.Generator().manual_seed(0))
    x, y = image.to(torch.uint8).expand(n, 3, 12, 12).contiguous(), torch.arange(n)
    aug = build_augment({"crop": {"padding": 4}, "flip": {"p": 0.5}})
    epoch = [0]

    def rank_batches(rank: int) -> DeviceBatches:
        return DeviceBatches(
            x, y, batch_size=n // 2, mean=torch.zeros(3), std=torch.ones(3), augment=aug,
            shuffle=True, seed=0, channels_last=False, rank=rank, world_size=2,
            epoch=lambda: epoch[0],
        )  # fmt: skip

    def first_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xb, yb = next(iter(rank_batches(rank)))
        return xb, yb, torch.rand(8)  # a dropout mask's draws come after the batch's

    (x0, y0, drop0), (x1, y1, drop1) = first_batch(0), first_batch(1)
    assert sorted(y0.tolist() + y1.tolist()) == list(range(n))  # one order, two shards
    assert not torch.equal(x0, x1) and not torch.equal(drop0, drop1)
    again = first_batch(1)
    assert torch.equal(again[0], x1) and torch.equal(again[2], drop1)
    epoch[0] = 1
    assert not torch.equal(first_batch(1)[0], x1)


def test_unknown_op_or_param_names_the_key():
    with pytest.raises(UserError, match=r"dataset\.augment\.blur"):
        build_augment({"blur": {"sigma": 1}})
    with pytest.raises(UserError, match=r"dataset\.augment\.crop"):
        build_augment({"crop": {"pad": 4}})
