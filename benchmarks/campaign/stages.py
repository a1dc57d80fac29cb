"""The campaign's stages, in priority order: each measures one thing and returns its figures.

A stage runs the real command line (`python -m cifar_sweep ...`) where a user would, on the
CIFAR-10 JPEG q75 copy named by --data, or, with --smoke, on a small generated set with shrunk
models; its run folders and studies go under --out/<stage>, the data cache under --out/cache.
Each gets the stage budget (8 minutes on the GPU) and stops its sweeps when the budget runs
out; what finished is recorded.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna

from benchmarks import sweep_workers
from benchmarks.campaign import airbench as airbench_stage

SMOKE_DATA = ["dataset=synthetic", "dataset.val_size=80", "trainer.accelerator=cpu"]
SMOKE = {  # per experiment: its model shrunk and its scale cut, for the CPU
    "nas_hyperband": [
        "model.channels=[8,8,8,8]",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2",
        "retrain.epochs=1",
    ],
    "resnet18_lr": ["model.width=8", "trainer.max_epochs=1"],
    "resnet18_detached_bn": ["model.width=8", "trainer.max_epochs=1"],
    "seq_vs_branch_random": [
        "model.filters=8",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "retrain.epochs=1",
    ],
    "resnet_dense_random": [
        "model.widths=[8,16]",
        "model.units=32",
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=2",
    ],
    "resnet18_budget": [
        "model.width=8",
        "trainer.max_epochs=2",
        "dataset.batch_size=64",
        "trainer.compile=false",
    ],
}


def data(c) -> list[str]:
    """The dataset (and device) overrides of every command of the campaign."""
    quiet = ["trainer.progress_bar=false", f"dataset.cache_dir={c.out / 'cache'}"]
    if c.smoke:
        return [*SMOKE_DATA, *quiet]
    if not (c.data / "train").is_dir():
        sys.exit(
            f"error: --data {c.data}: no train/ folder there; unpack the CIFAR-10 JPEG copy "
            "(make data/cifar10-jpeg) or point --data at a train/ and test/ ImageFolder tree"
        )
    return ["dataset=cifar10_folder", f"dataset.root={c.data}", *quiet]


def scale(c, experiment: str, *gpu: str) -> list[str]:
    """The experiment's overrides at the campaign's scale: `gpu` on the GPU, SMOKE's on the CPU."""
    return SMOKE.get(experiment, []) if c.smoke else list(gpu)


def sweep(c, stage: str, experiment: str, *extra: str, share: float = 1.0):
    """Run `+experiment` as a sweep in a fresh folder (with `c.keep`, in the stage's folder as it
    is: the study goes on); return (the call, the study, the folder)."""
    out = c.out / stage
    if not c.keep:
        shutil.rmtree(out, ignore_errors=True)
    storage = f"sqlite:///{out / 'studies.db'}"
    call = c.run(
        sys.executable,
        "-m",
        "cifar_sweep",
        "-m",
        f"+experiment={experiment}",
        *data(c),
        *extra,
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={out / 'sweep'}",
        share=share,
    )
    names = optuna.get_all_study_names(storage) if (out / "studies.db").exists() else []
    study = optuna.load_study(study_name=names[0], storage=storage) if names else None
    return call, study, out


def job(out: Path, trial: optuna.trial.FrozenTrial) -> dict:
    """A trial's metrics.json (its run folder is its number)."""
    path = out / "sweep" / str(trial.number) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def retrain(c, experiment: str, out: Path, *extra: str) -> tuple[dict, dict[str, dict]]:
    """cifar_sweep.retrain on the stage's study; (the call, metrics per retrained label)."""
    call = c.run(
        sys.executable,
        "-m",
        "cifar_sweep.retrain",
        f"+experiment={experiment}",
        *data(c),
        *extra,
        f"hydra.sweeper.storage=sqlite:///{out / 'studies.db'}",
        f"hydra.run.dir={out / 'retrain'}",
    )
    runs = {
        p.parent.name: json.loads(p.read_text()) for p in (out / "retrain").glob("*/metrics.json")
    }
    return call, runs


def finished(study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in (study.trials if study else []) if t.state.name == "COMPLETE"]


def gpu_tests(c, previous: dict) -> dict:
    call = c.run(
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "tests/test_gpu.py",
        keep_output=True,
    )
    output = call.pop("output")
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", output.splitlines()[-1]):
        counts[kind] = int(n)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    skipped = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", output, re.M)
    return {
        "figures": counts | {"failed_tests": failed, "skip_reasons": sorted(set(skipped))},
        "commands": [call],
    }


def throughput_stage(c, previous: dict) -> dict:
    """ResNet-18 at full width on 45k images: runner vs bare loop, compile off then on."""
    from benchmarks import throughput  # imports Lightning (seconds): only this stage needs it

    batches = (32, 64) if c.smoke else (128, 256, 512, 1024)
    model = ["model=resnet18", *(["model.width=8"] if c.smoke else [])]
    rows = list(previous.get("figures", {}).get("rows", []))  # a partial stage goes on
    rate = throughput.matmul_tflops(throughput.train_device())
    for compiled in (False,) if c.smoke else (False, True):  # compiling on a CPU takes minutes
        for batch in batches:
            if any(r["batch"] == batch and r["compile"] == compiled for r in rows):
                continue
            need = 2 if c.smoke else 100 if compiled else 30  # seconds: a compile takes about 1 min
            if c.left() < need:
                return {"figures": {"matmul_tflops": rate, "rows": rows}, "complete": False}
            rows.append(
                throughput.measure(
                    [
                        *data(c),
                        *model,
                        f"dataset.batch_size={batch}",
                        f"trainer.compile={compiled}",
                        "dataset.drop_last=true",
                        "trainer.max_epochs=3",
                    ],
                    rate,
                )
            )
    best = min(rows, key=lambda r: r["runner_s_per_epoch"])
    profile = throughput.profile(
        [*data(c), *model, f"dataset.batch_size={best['batch']}", "dataset.drop_last=true"]
    )
    return {"figures": {"matmul_tflops": rate, "rows": rows, "profile": profile}}


def s2_nas(c, previous: dict, stage: str = "s2-nas") -> dict:
    call, study, out = sweep(c, stage, "nas_hyperband", *scale(c, "nas_hyperband"), share=0.7)
    best = max(finished(study), key=lambda t: t.value, default=None)
    ended = [t for t in (study.trials if study else []) if t.state.name in ("COMPLETE", "PRUNED")]
    figures = {
        "complete_trials": len(finished(study)),
        "pruned_trials": sum(t.state.name == "PRUNED" for t in ended),
        "epochs_trained": sum(len(t.intermediate_values) for t in ended),
    }
    calls = [call]
    if best:
        p = best.params
        layers = p.get("model.layers", 0)
        figures |= {
            "best_val_acc": best.value,
            "lr": p.get("optimizer.lr"),
            "layers": layers,
            "channels": [p.get(f"model.channels.{i}") for i in range(layers)],
            "kernels": [p.get(f"model.kernels.{i}") for i in range(layers)],
        }
        rcall, runs = retrain(c, "nas_hyperband", out, *scale(c, "nas_hyperband"))
        calls.append(rcall)
        if "best" in runs:
            figures |= {
                "retrain_test_acc": runs["best"].get("test/acc"),
                "retrain_epochs": runs["best"].get("epochs"),
                "retrain_s_per_epoch": runs["best"].get("time/epoch_s"),
            }
    return {"figures": figures, "commands": calls}


def s4_lr(c, previous: dict, stage: str = "s4-lr", *extra: str) -> dict:
    call, study, out = sweep(c, stage, "resnet18_lr", *scale(c, "resnet18_lr", *extra))
    per_lr = {
        str(t.params["optimizer.lr"]): {
            "val_acc": t.value,
            "s_per_epoch": job(out, t).get("time/epoch_s"),
        }
        for t in finished(study)
    }
    return {"figures": {"per_lr": per_lr}, "commands": [call]}


def s4_detached(c, previous: dict) -> dict:
    call, study, out = sweep(
        c, "s4-detached", "resnet18_detached_bn", *scale(c, "resnet18_detached_bn")
    )
    per_norm = {
        t.params["model.norm"]: {"val_acc": t.value, "train_loss": job(out, t).get("train/loss")}
        for t in finished(study)
    }
    detached, batch = per_norm.get("detached_batch"), per_norm.get("batch")
    # published: the detached run fails near 22% while BatchNorm learns
    fails = bool(detached and batch and detached["val_acc"] < 0.35 and batch["val_acc"] > 0.7)
    return {
        "figures": {"per_norm": per_norm, "detached_fails_batch_learns": fails},
        "commands": [call],
    }


def s0(c, previous: dict) -> dict:
    both = "hydra.sweeper.enqueue=[{model: seq_cnn}, {model: two_branch_cnn}]"  # one of each
    gpu = ["hydra.sweeper.workers=4"]  # small models: four trials share the GPU
    call, study, out = sweep(
        c, "s0", "seq_vs_branch_random", both, *scale(c, "seq_vs_branch_random", *gpu), share=0.6
    )
    rcall, runs = retrain(c, "seq_vs_branch_random", out, *scale(c, "seq_vs_branch_random"))
    models = {
        m: {
            "search_val_acc": max(
                (t.value for t in finished(study) if t.params.get("model") == m), default=None
            ),
            "val_acc": r.get("val/acc_best"),
            "test_acc": r.get("test/acc"),
            "s_per_epoch": r.get("time/epoch_s"),
            "params": r.get("model/params"),
            "flops": r.get("model/flops"),
        }
        for m, r in runs.items()
    }
    a, b = models.get("seq_cnn"), models.get("two_branch_cnn")
    ratios = {}
    if a and b:
        ratios = {f"{k}_a_over_b": a[k] / b[k] for k in ("s_per_epoch", "flops", "params")}
    return {
        "figures": {"trials": len(finished(study)), "models": models, "ratios": ratios},
        "commands": [call, rcall],
    }


def s1(c, previous: dict) -> dict:
    gpu = ["hydra.sweeper.n_trials=4", "hydra.sweeper.workers=2"]  # reduced from 20
    call, study, out = sweep(c, "s1", "resnet_dense_random", *scale(c, "resnet_dense_random", *gpu))
    best = max(finished(study), key=lambda t: t.value, default=None)
    figures = {"trials": len(finished(study))}
    if best:
        figures |= {
            "best_val_acc": best.value,
            "test_acc": job(out, best).get("test/acc"),
            "params": best.params,
        }
    return {"figures": figures, "commands": [call]}


def workers(c, previous: dict) -> dict:
    """Issue 9's benchmark: 1, 2 and 4 workers sharing one GPU on nas_cnn trials."""
    counts = (2,) if c.smoke else (1, 2, 4)  # the smoke checks the path; the GPU compares
    overrides = [
        *data(c),
        *(
            ["hydra.sweeper.n_trials=2", "trainer.max_epochs=1"]
            if c.smoke
            else ["trainer.max_epochs=2"]
        ),
    ]
    rows = {}
    for n in counts:
        out = c.out / "workers" / str(n)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        if c.left() < 10:
            return {"figures": {"rows": rows}, "complete": False}
        try:
            rows[str(n)] = sweep_workers.run(n, overrides, out, timeout=c.left())
        except subprocess.TimeoutExpired:  # the stage's time ran out: keep the rows measured
            return {"figures": {"rows": rows}, "complete": False}
    return {"figures": {"rows": rows}}


def single(c, stage: str, experiment: str, *extra: str, share: float = 1.0) -> tuple[dict, dict]:
    """`+experiment` as one run in a fresh folder; (the call, its metrics.json). With `c.keep`,
    a finished run in the stage's folder is kept, and a run cut short resumes there."""
    out = c.out / stage
    metrics = out / "metrics.json"
    args = [f"+experiment={experiment}", *data(c), *extra, f"hydra.run.dir={out}"]
    if c.keep and metrics.exists():
        return {"command": c.shown(["cifar_sweep", *args]), "kept": True, "rc": 0}, json.loads(
            metrics.read_text()
        )
    if not c.keep:
        shutil.rmtree(out, ignore_errors=True)
    elif (out / ".hydra" / "config.yaml").is_file():
        args.append(f"resume={out}")
    call = c.run(sys.executable, "-m", "cifar_sweep", *args, share=share)
    return call, json.loads(metrics.read_text()) if metrics.exists() else {}


def s4_budget(c, previous: dict) -> dict:
    call, m = single(c, "s4-budget", "resnet18_budget", *scale(c, "resnet18_budget"))
    keys = {
        "test/acc": "test_acc",
        "epochs": "epochs",
        "time/total_s": "total_s",
        "time/epoch_s": "s_per_epoch",
    }
    return {"figures": {v: m.get(k) for k, v in keys.items()}, "commands": [call]}


def airbench(c, previous: dict) -> dict:
    """Stretch: PyPI's airbench (0.1.8) on our tensors, beside our fast94 recipe."""
    return airbench_stage.run(c, single)


ALL = {
    "gpu-tests": gpu_tests,
    "throughput": throughput_stage,
    "s2-nas": s2_nas,
    "s4-lr": s4_lr,
    "s4-detached": s4_detached,
    "s0": s0,
    "s1": s1,
    "workers": workers,
    "s4-budget": s4_budget,
    "airbench": airbench,
}
