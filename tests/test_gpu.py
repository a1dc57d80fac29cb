"""What only a GPU shows: mixed precision, torch.compile inside Lightning, CUDA generators, the
evaluation on the device, sweeps and shared GPUs, and steps that never wait for the host.

Run with `pytest -m gpu` (or `make campaign STAGES=gpu-tests` on a GPU machine); without CUDA
every test here is skipped, saying why.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, run_cli, states, study, sweep

from cifar_sweep.sweep.contract import OWNER, RUN_DIR

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (a GPU test)"),
]
GPU = ["trainer.accelerator=gpu", "dataset.image_size=32", "dataset.train_per_class=300"]


def gpu_cfg(tmp_path: Path, *overrides: str):
    return compose_cfg(*GPU, *overrides, tmp_path=tmp_path)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("variant", ["trainer.channels_last=true", "trainer.compile=true"])
def test_mixed_precision_training_learns(precision: str, variant: str, tmp_path: Path):
    from cifar_sweep.train import train

    cfg = gpu_cfg(
        tmp_path,
        f"trainer.precision={precision}",
        variant,
        "trainer.max_epochs=4",
        "dataset.drop_last=true",
        "optimizer.lr=0.05",
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["test/acc"] > 0.6  # 4 classes: chance is 0.25
    assert metrics["gpu/peak_mem_gb"] > 0


def test_device_augmentation_is_reproducible_per_seed_on_cuda():
    from cifar_sweep.data.augment import build_augment
    from cifar_sweep.data.batches import DeviceBatches

    x = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, device="cuda")
    y = torch.arange(300, device="cuda")
    ops = {
        "crop": {"padding": 4},
        "flip": {"p": 0.5},
        "cutout": {"size": 8},
        "rotation": {"degrees": 10},
    }

    def epoch(seed: int) -> list[torch.Tensor]:
        batches = DeviceBatches(
            x,
            y,
            batch_size=64,
            mean=torch.zeros(3, device="cuda"),
            std=torch.ones(3, device="cuda"),
            augment=build_augment(ops),
            shuffle=True,
            seed=seed,
            channels_last=True,
        )
        return [xb for xb, _ in batches]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert first[0].device.type == "cuda" and first[0].is_contiguous(
        memory_format=torch.channels_last
    )


def test_evaluation_report_from_a_cuda_run(tmp_path: Path):
    from cifar_sweep.train import train

    cfg = gpu_cfg(tmp_path, "trainer.max_epochs=2")
    metrics = train(cfg, tmp_path / "run", evaluate=True)
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 100  # every test image, once
    assert report["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert report["gpu/peak_mem_gb"] > 0 and 0 <= report["macro_auc_ovr"] <= 1


def test_detached_batchnorm_under_bf16(tmp_path: Path):
    from cifar_sweep.train import train

    cfg = gpu_cfg(
        tmp_path,
        "model.norm=detached_batch",
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=2",
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs"] == 2 and metrics["train/loss"] == metrics["train/loss"]  # finite


def test_a_training_epoch_never_waits_for_the_host(tmp_path: Path):
    """torch.cuda.set_sync_debug_mode("error") from the second step to the last but one, data
    fetching, logging and the progress bar included: any host read there fails the run."""
    import lightning as L

    from cifar_sweep.train import train

    class NoSyncInSteps(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 1:  # the epoch's first and last steps may wait, once each
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == trainer.num_training_batches - 2:
                torch.cuda.set_sync_debug_mode("default")

    from test_sync import EVERY_AUGMENTATION

    cfg = gpu_cfg(
        tmp_path,
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=2",
        "trainer.progress_bar=true",
        "dataset.batch_size=32",
        *(f"+dataset.augment.{op}={v}" for op, v in EVERY_AUGMENTATION.items()),
    )
    try:
        metrics = train(cfg, tmp_path / "run", [NoSyncInSteps()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metrics["epochs"] == 2


def test_a_three_trial_sweep_with_median_pruning(tmp_path: Path):
    sweep(
        tmp_path,
        *GPU,
        "pruner=median",
        "sweeper=random",
        "hydra.sweeper.n_trials=3",
        "optimizer.lr=choice(1e-6, 0.05)",
        "trainer.max_epochs=4",
    )
    s = study(tmp_path)
    assert sum(states(s).get(k, 0) for k in ("COMPLETE", "PRUNED")) == 3
    assert all(t.intermediate_values for t in s.trials)  # each job reported from the GPU


def test_two_workers_share_one_gpu(tmp_path: Path):
    result = sweep(
        tmp_path,
        *GPU,
        "hydra.sweeper.workers=2",
        "hydra.sweeper.devices=[0]",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=3",
    )
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 4}
    assert {t.user_attrs[OWNER]["device"] for t in s.trials} == {"0"}
    assert {t.user_attrs[OWNER]["worker"] for t in s.trials} == {0, 1}
    a, b = ([t for t in s.trials if t.user_attrs[OWNER]["worker"] == w][0] for w in (0, 1))
    assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
    assert "worker 1: trial" in result.stdout + result.stderr


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (a GPU test)")
def test_a_sweep_of_trials_on_two_gpus_each_trains_on_its_group_with_nccl(tmp_path: Path):
    """A worker for every two GPUs (hydra.sweeper.devices=[0,1,2,3] with trainer.devices=2:
    two workers of two); each trial is two ranks, one per GPU of its worker's pair, over NCCL."""
    pairs = torch.cuda.device_count() // 2
    gpus = ",".join(map(str, range(2 * pairs)))
    result = sweep(
        tmp_path,
        *GPU,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "dataset.batch_size=16",
        f"hydra.sweeper.workers={pairs}",
        f"hydra.sweeper.devices=[{gpus}]",
        f"hydra.sweeper.n_trials={2 * pairs}",
        "trainer.max_epochs=3",
    )
    s = study(tmp_path)
    assert states(s) == {"COMPLETE": 2 * pairs}, result.stdout[-3000:]
    groups = {t.user_attrs[OWNER]["device"] for t in s.trials}
    assert groups == {f"{2 * w},{2 * w + 1}" for w in range(pairs)}
    for t in s.trials:
        metrics = json.loads((Path(t.user_attrs[RUN_DIR]) / "metrics.json").read_text())
        assert metrics["val/acc_best"] > 0.5 and metrics["gpu/peak_mem_gb"] > 0
        assert (Path(t.user_attrs[RUN_DIR]) / "train_ddp_process_1.log").exists()


def test_the_command_line_runs_on_the_gpu_by_default(tmp_path: Path):
    """No accelerator, precision or layout flags: a GPU run gets bf16 and channels_last."""
    done = run_cli(
        "trainer.accelerator=auto",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hparams = (tmp_path / "tb" / "hparams.yaml").read_text()
    assert "precision: bf16-mixed" in hparams and "channels_last: true" in hparams


def test_precision_auto_is_bf16_only_where_the_gpu_does_bf16_natively():
    from cifar_sweep.train import device_defaults

    native = torch.cuda.get_device_capability() >= (8, 0)  # Ampere and later
    precision = device_defaults(gpu_cfg(None)).trainer.precision
    assert precision == ("bf16-mixed" if native else "16-mixed")


def test_each_run_reports_its_own_peak_and_leaves_the_gpu_empty(tmp_path: Path):
    from cifar_sweep.train import train

    big = train(gpu_cfg(tmp_path, "model.width=64", "dataset.batch_size=256"), tmp_path / "a")
    # freed for other processes: what stays (cuBLAS workspaces) is a fraction of the peak
    assert torch.cuda.memory_reserved() < big["gpu/peak_mem_gb"] * 2**30 / 4
    small = train(gpu_cfg(tmp_path, "dataset.batch_size=16"), tmp_path / "b")
    assert small["gpu/peak_mem_gb"] < big["gpu/peak_mem_gb"] / 2, (small, big)
    assert torch.backends.cudnn.benchmark  # not deterministic: cuDNN picks its algorithms


def test_a_compiled_bf16_run_compiles_twice_and_reports_what_it_tested(tmp_path: Path):
    """One graph for training, one for evaluation (validation, test and the report's
    predictions, each batch size); the report's accuracy is the test's, to the image."""
    from torch._dynamo.utils import counters

    from cifar_sweep.instantiate import build
    from cifar_sweep.train import train

    torch._dynamo.reset()
    counters.clear()
    cfg = gpu_cfg(
        tmp_path,
        "trainer.compile=true",
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=2",
        "dataset.batch_size=64",  # 1120 training images: the last 32 are dropped
        "dataset.eval_batch_size=64",  # 80 validation and 100 test images: partial batches
    )
    metrics = train(cfg, tmp_path / "run", evaluate=True)
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert report["accuracy"] == metrics["test/acc"]
    [ckpt] = (tmp_path / "run" / "checkpoints").glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    plain = build(cfg.model, num_classes=4, in_channels=3)
    plain.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k[:6] == "model."})
