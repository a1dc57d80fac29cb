"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg, run_in_process

from cifar_sweep.instantiate import build


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def test_defaults_use_the_documented_keys():
    cfg = compose_cfg()
    for key in (
        "dataset.root",
        "dataset.val_size",
        "dataset.batch_size",
        "dataset.augment",
        "model.norm",
        "optimizer.lr",
        "optimizer.weight_decay",
        "trainer.max_epochs",
        "trainer.precision",
        "seed",
        "objective",
    ):
        assert key.split(".")[-1] in (cfg if "." not in key else cfg[key.split(".")[0]]), key
    assert cfg.objective == "val/acc_best"


@pytest.mark.parametrize("option", options("model"))
def test_model_options_classify(option):
    cfg = compose_cfg(f"model={option}")
    model = build(cfg.model, num_classes=7, in_channels=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("option", options("optimizer"))
def test_optimizer_options_step(option):
    cfg = compose_cfg(f"optimizer={option}")
    param = torch.nn.Parameter(torch.ones(3))
    opt = build(cfg.optimizer)(params=[param])
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    assert opt.param_groups[0]["weight_decay"] == cfg.optimizer.weight_decay
    param.sum().backward()
    opt.step()
    assert (param < 1).all()


@pytest.mark.parametrize("option", options("dataset"))
def test_dataset_options_pass_the_checks_and_read_their_source(option, tmp_path: Path):
    """Every key an option sets is one its source reads (the checks refuse any other, as it would
    be silently ignored) and every value is valid; the folder options on a small tree."""
    from PIL import Image

    from cifar_sweep.checks import check
    from cifar_sweep.data import sources

    for split, cls in [(s, c) for s in ("train", "test") for c in ("a", "b")]:
        (tmp_path / "tree" / split / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(
                tmp_path / "tree" / split / cls / f"{i}.png"
            )
    folder = compose_cfg(f"dataset={option}").dataset.source == "folder"
    extra = [f"dataset.root={tmp_path / 'tree'}", "dataset.val_size=2"] if folder else []
    cfg = compose_cfg(f"dataset={option}", *extra, tmp_path=tmp_path)
    check(cfg)
    if folder or cfg.dataset.source == "synthetic":  # the others need a download
        data = sources.load(cfg.dataset)
        classes = cfg.dataset.get("num_classes", 2)
        side = cfg.dataset.get("image_size") or 8
        assert len(data.classes) == classes and data.train_x.shape[1:] == (3, side, side)


def test_trainer_keys_are_lightning_trainer_arguments(tmp_path: Path):
    from cifar_sweep.train import build_trainer, device_defaults

    cfg = compose_cfg(
        "+trainer.max_steps=3",
        "+trainer.check_val_every_n_epoch=2",
        "trainer.early_stopping.patience=2",
    )
    trainer = build_trainer(device_defaults(cfg), tmp_path, [])
    assert trainer.max_steps == 3 and trainer.check_val_every_n_epoch == 2  # any Trainer argument
    assert trainer.max_epochs == cfg.trainer.max_epochs and trainer.num_sanity_val_steps == 0
    assert any(type(c).__name__ == "EarlyStopping" for c in trainer.callbacks)


def test_fast_dev_run_trains_one_batch(tmp_path: Path):
    from cifar_sweep.train import train

    metrics = train(compose_cfg("+trainer.fast_dev_run=true", tmp_path=tmp_path), tmp_path / "r")
    assert metrics["time/images_per_s"] * metrics["time/epoch_s"] == pytest.approx(32)  # 1 batch


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.fast_dev_rnu=true", "trainer.fast_dev_rnu: not a Lightning Trainer argument"),
        ("+trainer.logger=false", "trainer.logger: set by the runner"),
    ],
)
def test_unknown_trainer_key_is_refused_naming_it(override: str, message: str, tmp_path: Path):
    from cifar_sweep.errors import UserError
    from cifar_sweep.train import train

    with pytest.raises(UserError, match=message):
        train(compose_cfg(override, tmp_path=tmp_path), tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # refused before the data was read


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["repeats=0"], "repeats=0 must be an integer >= 1"),
        (["repeats=2", "dataset.folds=3"], "choose one"),
    ],
)
def test_bad_repeats_are_refused(overrides, message):
    from cifar_sweep.checks import check
    from cifar_sweep.errors import UserError

    with pytest.raises(UserError, match=message):
        check(compose_cfg(*overrides))


def test_precision_and_channels_last_default_to_what_the_device_wants(monkeypatch):
    from cifar_sweep.train import device_defaults

    cpu = device_defaults(compose_cfg())  # conftest's TINY runs on the CPU
    assert (cpu.trainer.precision, cpu.trainer.channels_last) == ("32", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: True)
    gpu = device_defaults(compose_cfg("trainer.accelerator=auto"))
    assert (gpu.trainer.precision, gpu.trainer.channels_last) == ("bf16-mixed", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: False)
    old = device_defaults(compose_cfg("trainer.accelerator=gpu"))
    assert old.trainer.precision == "16-mixed"
    chosen = compose_cfg("trainer.accelerator=gpu", "trainer.precision=32")
    assert str(device_defaults(chosen).trainer.precision) == "32"  # a value given is kept
    assert chosen.trainer.channels_last == "auto"  # the caller's config is not changed


@pytest.mark.parametrize("value", ["-0.1", "heavy"])
def test_a_negative_or_non_number_weight_decay_is_refused_in_one_line_naming_it(
    value: str, tmp_path: Path
):
    result = run_in_process(
        f"optimizer.weight_decay={value}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 1
    assert result.stderr == f"error: optimizer.weight_decay={value} must be a number >= 0\n"
    assert not (tmp_path / "cache").exists()  # refused before the data was read
