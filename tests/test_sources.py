"""The data source's cache and decode: memory-mapped, built once by workers started together on
a cold cache, channels decided by the whole tree, CIFAR-10's download checked only when needed."""

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from conftest import ROOT, compose_cfg, run_cli
from PIL import Image

from cifar_sweep.data import sources


def rgb_tree(root: Path, *, per_class: int, side: int = 8, gray_first: bool = False) -> Path:
    """Two classes of random RGB PNGs; with gray_first, train/a/0.png is grayscale."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if gray_first and (split, c, i) == ("train", "a", 0):
                    image = image.convert("L")
                image.save(root / split / c / f"{i}.png")
    return root


def folder_cfg(root: Path, tmp_path: Path, *overrides: str):
    return compose_cfg(
        "dataset=image_folder", f"dataset.root={root}", *overrides, tmp_path=tmp_path
    ).dataset


@pytest.mark.slow  # moved to slow to keep the default run under 3 minutes; CI runs it
def test_a_grayscale_first_image_leaves_an_rgb_tree_rgb_and_is_named(tmp_path: Path):
    tree = rgb_tree(tmp_path / "tree", per_class=20, side=16, gray_first=True)
    result = run_cli(
        "dataset=image_folder",
        f"dataset.root={tree}",
        "model=tiny_cnn",
        "trainer.max_epochs=1",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test images of 3x16x16" in result.stdout  # not 1x16x16: the tree is colour
    gray = tree / "train" / "a" / "0.png"
    assert f"converted 1 grayscale images to RGB (the tree has colour images too), e.g. {gray}" in (
        result.stdout
    )
    data = sources.load(folder_cfg(tree, tmp_path))
    pixels = torch.from_numpy(np.array(Image.open(gray)))
    assert torch.equal(data.train_x[0], pixels.expand(3, 16, 16))  # its gray in every channel


def mapped(path: Path) -> list[tuple[int, int]]:
    """The address ranges where this process maps `path` (Linux's /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def test_the_cache_is_memory_mapped(tmp_path: Path):
    tree = rgb_tree(tmp_path / "tree", per_class=3)
    built = sources.load(folder_cfg(tree, tmp_path))
    read = sources.load(folder_cfg(tree, tmp_path))
    [cache] = (tmp_path / "cache").glob("*.pt")
    # the tensors are pages of the cache file, read as they are used, not a copy in memory
    for x in (read.train_x, read.test_x):
        assert any(lo <= x.data_ptr() < hi for lo, hi in mapped(cache)), "read into memory"
    assert not any(lo <= built.train_x.data_ptr() < hi for lo, hi in mapped(cache))
    assert torch.equal(read.train_x, built.train_x)


LOAD_AFTER_GO = """
import sys, time, logging
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from conftest import compose_cfg
from cifar_sweep.data import sources
cfg = compose_cfg("dataset=image_folder", "dataset.root={tree}", tmp_path=Path({tmp!r})).dataset
Path({ready!r}).touch()
while not Path({go!r}).exists():
    time.sleep(0.01)
data = sources.load(cfg)
print("sum", int(data.train_x.sum()))
"""


def test_workers_started_together_on_a_cold_cache_decode_it_once(tmp_path: Path):
    tree = rgb_tree(tmp_path / "tree", per_class=150, side=32)  # long enough to overlap
    procs = []
    for i in range(2):
        script = LOAD_AFTER_GO.format(
            root=str(ROOT), tests=str(ROOT / "tests"), tree=tree, tmp=str(tmp_path),
            ready=str(tmp_path / f"ready{i}"), go=str(tmp_path / "go"),
        )  # fmt: skip
        cmd = [sys.executable, "-c", script]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    for i in range(2):  # both imported and composed: released at the same moment
        while not (tmp_path / f"ready{i}").exists():
            assert procs[i].poll() is None, "a worker died before loading"
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum(out.count("dataset: decoded") for out in outs) == 1, outs
    assert sum("dataset: cached tensors" in out for out in outs) == 1, outs
    sums = [line for out in outs for line in out.splitlines() if line.startswith("sum ")]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def fake_cifar10(root: Path) -> np.ndarray:
    """torchvision's CIFAR-10 layout with 4 images per batch file; the training images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        train += [data] if name != "test_batch" else []
        batch = {"data": data, "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return np.concatenate(train).reshape(-1, 3, 32, 32)


def test_cifar10_is_md5_checked_only_when_its_cache_is_missing_or_stale(tmp_path, monkeypatch):
    images = fake_cifar10(tmp_path / "cifar10")
    checked = []

    def check_integrity(path, md5=None) -> bool:  # the real one would refuse the fake files
        checked.append(path)
        return True

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", check_integrity)
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={tmp_path / 'cifar10'}", tmp_path=tmp_path)
    built = sources.load(cfg.dataset)
    assert checked, "a cold cache: the download is verified"
    assert torch.equal(built.train_x, torch.from_numpy(images))
    assert built.classes[:2] == ["c0", "c1"]
    checked.clear()
    read = sources.load(cfg.dataset)  # every later run and trial
    assert checked == []
    assert torch.equal(read.train_x, built.train_x)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes())  # a new modification time: the cache is stale
    sources.load(cfg.dataset)
    assert checked


def test_decode_holds_the_decoded_images_about_once(tmp_path: Path):
    """Peak memory of a cold decode, measured in a fresh process: a list of images then
    torch.stack held them twice."""
    images = rgb_tree(tmp_path / "tree", per_class=60, side=8)
    script = f"""
import resource, sys, logging
from pathlib import Path
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from conftest import compose_cfg
from cifar_sweep.data import decode, sources, tree
cfg = compose_cfg("dataset=image_folder", "dataset.root={images}", "dataset.image_size=256",
                  tmp_path=Path({str(tmp_path)!r})).dataset
decode.read_tree(tree.image_folder(Path("{images}"), stat=False), 8)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
data = sources.load(cfg)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print((peak - before) / (data.train_x.nbytes + data.test_x.nbytes))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ratio = float(result.stdout.split()[-1])
    assert ratio < 1.7, f"the decode's peak grew by {ratio:.2f} times the decoded images"


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO)
