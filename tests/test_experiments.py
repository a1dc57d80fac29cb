"""The five studies' experiment configs, the Tiny ImageNet layout, retraining and evaluation."""

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import ROOT, compose_cfg, in_process
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torchvision.io import write_jpeg

from cifar_sweep import retrain
from cifar_sweep.checks import check
from cifar_sweep.classifier import lr_schedule
from cifar_sweep.data import sources
from cifar_sweep.instantiate import build
from cifar_sweep.models.norms import DetachedBatchNorm2d
from cifar_sweep.train import train

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
SMALL = {  # each study's model, shrunk for two CPU cores (by class name); the recipe stays
    "ResNet18": ["model.width=8"],
    "FastCNN": ["model.stem=8", "model.widths=[8,16,16]"],
    "SeqCNN": ["model.filters=8"],
    "ResNetDense": ["model.widths=[8,16]", "model.units=32"],
    "NasCNN": ["model.channels=[8,8,8,8]"],
    "TinyCNN": ["model.channels=[8,16,16]", "model.hidden=32"],
}


def tiny_imagenet_tree(root: Path, wnids=("n01", "n02", "n03"), per_class=12) -> Path:
    """The official tiny-imagenet-200 layout; class i's images are filled with 40 + 60 * i."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing{i}, other\n" for i, w in enumerate(wnids)))
    notes = []
    for i, w in enumerate(wnids):
        image = torch.full((3, 64, 64), 40 + 60 * i, dtype=torch.uint8)
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(per_class):
            write_jpeg(image, str(root / "train" / w / "images" / f"{w}_{j}.JPEG"))
        for j in range(3):
            name = f"val_{i * 3 + j}.JPEG"
            write_jpeg(image, str(root / "val" / "images" / name))
            notes.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return root


def experiment_overrides(name: str, tmp_path: Path) -> list[str]:
    """The experiment on a small learnable set, its model shrunk (an unlisted model fails)."""
    cfg = compose_cfg(f"+experiment={name}")
    model = cfg.model._target_.rsplit(".", 1)[-1]
    assert model in SMALL, f"{name}: add its model {model} to SMALL"
    data = (
        [
            "dataset.download=false",
            f"dataset.root={tiny_imagenet_tree(tmp_path / 'tin')}",
            "dataset.val_size=6",
        ]
        if cfg.dataset.source == "tiny_imagenet"
        else ["dataset=synthetic", "dataset.val_size=80"]
    )
    return [
        f"+experiment={name}",
        *data,
        *SMALL[model],
        "trainer.max_epochs=1",
        "dataset.drop_last=false",  # fast94's 1024 and resnet18_budget's 512 exceed the small set
        "trainer.compile=false",  # compiling costs a minute on a CPU
        f"dataset.cache_dir={tmp_path / 'cache'}",
    ]


def chance(cfg) -> float:
    return 1 / (3 if cfg.dataset.source == "tiny_imagenet" else cfg.dataset.num_classes)


def recipe(name: str) -> dict:
    """The experiment's composed config as flat `key: value` pairs, its model not yet shrunk."""

    def flat(node, prefix=""):
        for k, v in node.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]

    return dict(flat(OmegaConf.to_container(compose_cfg(f"+experiment={name}"))))


# An experiment whose recipe is another's but for the values its study sweeps trains nothing the
# other does not: it is trained once, as that one (the test below keeps this list honest).
SAME_RECIPE = {"resnet18_scheduler": "resnet18_lr", "resnet18_weight_decay": "resnet18_lr"}
SWEPT = ("name", "optimizer.lr", "optimizer.weight_decay", "scheduler.")
# Published to fail (BatchNorm without its statistics' gradients): it has its own test below.
FAILING = "resnet18_detached_bn"
LEARNS = [n for n in EXPERIMENTS if n not in SAME_RECIPE and n != FAILING]


def test_experiments_trained_once_differ_only_in_swept_values():
    for name, same in SAME_RECIPE.items():
        a, b = recipe(name), recipe(same)
        differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        assert all(k.startswith(SWEPT) for k in differ), f"{name} vs {same}: {differ}"


def epochs_to_learn(name: str) -> int:
    """4 epochs, or the recipe's warm-up and 3 epochs of its schedule after it: a run cut off
    inside the warm-up ends at its highest learning rate, with weights still moving fast, and
    learns the small set on some seeds only (resnet18_budget, 5 warm-up epochs: seed 0 of
    seeds 0-4 at chance after 4 epochs; 0.82 to 0.95 test accuracy on each of them after 8)."""
    return max(4, recipe(name)["scheduler.warmup_epochs"] + 3)


@pytest.mark.parametrize("name", LEARNS)
def test_experiment_learns_the_small_set(name: str, tmp_path: Path):
    # batch 32: a few steps per epoch on 320 images; the rest of the recipe as configured
    epochs = epochs_to_learn(name)
    overrides = [
        *experiment_overrides(name, tmp_path),
        f"trainer.max_epochs={epochs}",
        "dataset.batch_size=32",
    ]
    cfg = compose_cfg(*overrides)
    assert cfg.name == name
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs"] == epochs
    # 100 test images of 4 classes (9 of 3 for Tiny ImageNet): 0.15 above chance is beyond noise
    assert metrics["test/acc"] > chance(cfg) + 0.15, metrics["test/acc"]


def test_detached_batchnorm_recipe_swaps_every_norm_and_its_run_is_recorded(tmp_path: Path):
    """The study expects this recipe to train badly, not to crash: every BatchNorm of the model
    is the detached one, and the run ends with finite metrics (not as "diverged")."""
    cfg = compose_cfg(*experiment_overrides(FAILING, tmp_path), "trainer.max_epochs=2")
    model = build(cfg.model, num_classes=4, in_channels=3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, DetachedBatchNorm2d) for m in norms)
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs"] == 2
    assert all(math.isfinite(metrics[k]) for k in ("train/loss", "val/acc_best", "test/acc"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_passes_the_checks_and_builds_its_model_and_schedule(name: str, request):
    """The cheap half of a run for every study, including those not trained above: its values
    pass the checks, its model classifies its images, its optimizer and schedule step."""
    with initialize_config_dir(str(ROOT / "conf")):  # as published, but for the model's width
        cfg = compose("config", overrides=[f"+experiment={name}"])
        small = SMALL[cfg.model._target_.rsplit(".", 1)[-1]]
        if cfg.dataset.source == "folder":  # the JPEG copy's tree, a subset of it
            subset = request.getfixturevalue("jpeg_subset")
            small = [*small, f"dataset.root={subset}", "dataset.val_size=0.1"]
        cfg = compose("config", overrides=[f"+experiment={name}", *small])
    check(cfg)
    classes, side = (200, 64) if cfg.dataset.source == "tiny_imagenet" else (10, 32)
    model = build(cfg.model, num_classes=classes, in_channels=3)
    logits = model(torch.zeros(2, 3, side, side))
    assert logits.shape == (2, classes)
    optimizer = build(cfg.optimizer)(params=model.parameters())
    entry = lr_schedule(
        optimizer,
        build(cfg.scheduler.fn),
        monitor=cfg.scheduler.monitor,
        interval=cfg.scheduler.interval,
        warmup_epochs=cfg.scheduler.warmup_epochs,
        max_epochs=cfg.trainer.max_epochs,
        steps_per_epoch=10,
    )
    assert optimizer.defaults["lr"] == cfg.optimizer.lr
    logits.logsumexp(1).sum().backward()
    optimizer.step()
    entry["scheduler"].step(1.0) if cfg.scheduler.monitor else entry["scheduler"].step()


def test_every_experiment_is_named_documented_and_has_a_quick_run():
    readme = (ROOT / "README.md").read_text()
    for name in EXPERIMENTS:
        text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_"), name
        assert "# Quick run:" in text, name
        assert yaml.safe_load(text)["name"] == name  # names its studies <name>-<hash>
        assert f"| `{name}` |" in readme, f"{name} is missing from the README's studies table"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_as_a_sweep(name: str, tmp_path: Path):
    cmd = [
        sys.executable,
        "-m",
        "cifar_sweep",
        "-m",
        *experiment_overrides(name, tmp_path),
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 's.db'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [study] = optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}")
    assert study.startswith(f"{name}-")


def test_tiny_imagenet_layout_is_read_with_its_val_annotations(tmp_path: Path):
    root = tiny_imagenet_tree(tmp_path / "tiny-imagenet-200")
    cfg = compose_cfg(
        "dataset=tiny_imagenet", f"dataset.root={root}", "dataset.download=false", tmp_path=tmp_path
    )
    data = sources.load(cfg.dataset)
    assert data.classes == ["thing0", "thing1", "thing2"]
    assert data.train_x.shape == (36, 3, 64, 64) and data.test_x.shape == (9, 3, 64, 64)
    for x, y in [(data.train_x, data.train_y), (data.test_x, data.test_y)]:
        brightness = x.float().mean(dim=(1, 2, 3))
        assert torch.allclose(brightness, 40 + 60 * y.float(), atol=3)  # labels match images


def test_tiny_imagenet_without_the_layout_names_what_is_missing(tmp_path: Path):
    from cifar_sweep.errors import UserError

    cfg = compose_cfg("dataset=tiny_imagenet", f"dataset.root={tmp_path}", "dataset.download=false")
    with pytest.raises(UserError, match="wnids.txt"):
        sources.load(cfg.dataset)


def test_retrain_reads_the_best_params_and_writes_a_comparison(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(
        study_name="seq_vs_branch_random-abc", storage=storage, direction="maximize"
    )
    choice = optuna.distributions.CategoricalDistribution
    space = {"model": choice(["seq_cnn", "two_branch_cnn"]), "model.filters": choice([8, 16, 32])}
    for model, filters, value in [
        ("seq_cnn", 8, 0.5),
        ("seq_cnn", 16, 0.7),
        ("two_branch_cnn", 32, 0.6),
        ("two_branch_cnn", 8, 0.4),
    ]:
        params = {"model": model, "model.filters": filters}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=value))
    out = tmp_path / "retrain"
    overrides = [
        *experiment_overrides("seq_vs_branch_random", tmp_path),
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        f"hydra.sweeper.storage={storage}",
        "retrain.epochs=2",
        f"hydra.run.dir={out}",
    ]
    result = in_process(retrain.run, overrides)  # python -m cifar_sweep.retrain <overrides>
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in out.glob("[!.]*") if p.is_dir()} == {"seq_cnn", "two_branch_cnn"}
    best = [("seq_cnn", "SeqCNN", 16), ("two_branch_cnn", "TwoBranchCNN", 32)]  # per model
    for model, cls, filters in best:
        run = out / model
        hparams = yaml.safe_load((run / "tb" / "hparams.yaml").read_text())
        assert hparams["model"]["_target_"].endswith(cls)
        assert hparams["model"]["filters"] == filters
        assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
        evaluation = json.loads((run / "evaluation.json").read_text())
        assert sum(map(sum, evaluation["confusion_matrix"])) == 100  # the whole test split
        assert 0 <= evaluation["macro_auc_ovr"] <= 1 and len(evaluation["per_class"]) == 4
        assert (run / "confusion_matrix.png").stat().st_size > 1000
    table = (out / "comparison.md").read_text()
    assert "| seq_cnn | 0.7000 |" in table and "| two_branch_cnn | 0.6000 |" in table
    assert "MFLOPs/image" in table
