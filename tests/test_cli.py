"""Bad input: a non-zero exit and an error naming the offending key or path."""

from pathlib import Path

import pytest
from conftest import compose_cfg, run_cli

from cifar_sweep import sources
from cifar_sweep.errors import UserError


def bad_trees(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    for split in ("train", "test"):
        (corrupt / split / "cat").mkdir(parents=True)
        (corrupt / split / "cat" / "0.jpg").write_bytes(b"not a jpeg at all")
    return {"empty": empty, "corrupt": corrupt}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["model=resnet99"], "model/resnet99"),
        (["optimizer.momentun=0.9"], "optimizer.momentun"),
        (["optimizer.lr=0"], "optimizer.lr"),
        (["optimizer.lr=-0.1"], "optimizer.lr"),
        (["dataset.batch_size=0"], "dataset.batch_size"),
        (["dataset.val_size=100000"], "dataset.val_size"),
        (["dataset=image_folder"], "dataset.root"),
        (["dataset=image_folder", "dataset.root=/no/such/folder"], "/no/such/folder"),
        (["dataset=image_folder", "dataset.root={empty}"], "{empty}"),
        (["dataset=image_folder", "dataset.root={corrupt}"], "{corrupt}/train/cat/0.jpg"),
        (["hydra.run.dir=/etc/hostname/run"], "/etc/hostname/run"),
        (["+dataset.augment.blur.sigma=1"], "dataset.augment.blur"),
    ],
)
def test_bad_input_exits_non_zero_naming_the_key(args, named, tmp_path: Path):
    trees = bad_trees(tmp_path)
    args = [a.format(**trees) for a in args]
    if not any(a.startswith("hydra.run.dir") for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    result = run_cli(*args, f"dataset.cache_dir={tmp_path / 'cache'}")
    assert result.returncode != 0
    assert named.format(**trees) in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_failed_download_names_the_offline_alternative(tmp_path: Path, monkeypatch):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={tmp_path}", tmp_path=tmp_path)
    with pytest.raises(
        UserError, match=r"could not download.*dataset=cifar10_folder dataset.root="
    ):
        sources.load(cfg.dataset)
