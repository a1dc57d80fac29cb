"""The CPU profile's stages (`--profile cpu`): S2 and S0 at their published protocol, S4's two
findings at ResNet-18 width 16, on the JPEG copy of CIFAR-10 and this machine's cores.

Each stage keeps its folder under --out: run again, the same commands go on where they stopped (a
sweep's study continues and its interrupted trial resumes from its last epoch, a run resumes with
`resume=<its folder>`, a retrain keeps its finished runs and resumes the others). One training
process at a time: on 2 cores, two processes slow each other many times over.
"""

from pathlib import Path

from benchmarks.campaign import stages
from benchmarks.peers.problem import copy_subset
from cifar_sweep.sweep import contract, pbt, pbt_replay

WIDTH = "model.width=16"  # S4 at a width 2 cores can train in an hour (published: 64)
# a sweep stage may be cut short many times: its interrupted trial is retried (from its last
# epoch) each time, not only once (the default), since a grid never proposes a failed point again
RETRY = "hydra.sweeper.max_retry=20"
# S0's final runs: the best setting our search space allows us to justify without a search (no
# time for one on 2 cores): Adam at its default lr 1e-3 (the Keras default such a study starts
# from), batch 128, the models' defaults (32 filters, dropout 0.2, ReLU, He init), up to 60
# epochs with the experiment's early stopping (val/loss, patience 5) and plateau schedule.
S0 = ["optimizer=adam", "optimizer.lr=0.001", "dataset.batch_size=128", "trainer.max_epochs=60"]
S0_MODELS = {"A": "seq_cnn", "B": "two_branch_cnn"}


def ran(*calls: dict) -> bool:
    """Whether every command ended well (a stage cut short stays incomplete: run it again)."""
    return all(call.get("rc") == 0 for call in calls)


def curve(run_dir: Path, tag: str) -> list[float]:
    """A logged scalar per epoch, from the run's TensorBoard files (all of them: a resumed run
    adds a file; an epoch logged twice keeps its last value)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = {}
    for path in sorted(run_dir.glob("tb/**/events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:  # Lightning writes scalars as one-value tensors
                    steps[event.step] = value.tensor.float_val[0]
    return [steps[k] for k in sorted(steps)]


def cpu_s2(c, previous: dict) -> dict:
    """S2 as published: TPE + Hyperband, 10 trials x 5 epochs, the best retrained 30 epochs."""
    entry = stages.s2_nas(c, previous, stage="cpu-s2")
    entry["figures"]["unpruned_epochs"] = 10 * 5
    return entry | {"complete": ran(*entry["commands"]) and len(entry["commands"]) == 2}


def cpu_s0(c, previous: dict) -> dict:
    """Model A and model B trained as S0's final runs were, one after the other."""
    models, calls = {}, []
    for arm, model in S0_MODELS.items():
        args = [f"model={model}", *S0, *stages.scale(c, "seq_vs_branch_random")]
        call, m = stages.single(c, f"cpu-s0/{model}", "seq_vs_branch_random", *args)
        calls.append(call)
        if not m:
            continue
        run_dir = c.out / "cpu-s0" / model
        epoch_s = curve(run_dir, "time/epoch_s")
        train_acc, val_acc = curve(run_dir, "train/acc"), curve(run_dir, "val/acc")
        models[arm] = {
            "model": model,
            "val_acc": m.get("val/acc_best"),
            "test_acc": m.get("test/acc"),
            "epochs": m.get("epochs"),
            "train_val_gap": train_acc[-1] - val_acc[-1] if train_acc and val_acc else None,
            "s_per_epoch": sum(epoch_s) / len(epoch_s) if epoch_s else m.get("time/epoch_s"),
            "flops": m.get("model/flops"),
            "params": m.get("model/params"),
        }
    a, b = models.get("A"), models.get("B")
    ratios = {}
    if a and b:
        ratios = {f"{k}_a_over_b": a[k] / b[k] for k in ("s_per_epoch", "flops", "params")}
    return {
        "figures": {"models": models, "ratios": ratios, "settings": S0},
        "commands": calls,
        "complete": ran(*calls),
    }


def cpu_s4_lr(c, previous: dict) -> dict:
    """S4's learning-rate finding (0.01 best, 0.001 worst) at width 16, 15 epochs each."""
    entry = stages.s4_lr(c, previous, "cpu-s4-lr", WIDTH, RETRY)
    per = {float(k): v["val_acc"] for k, v in entry["figures"]["per_lr"].items()}
    if len(per) == 3:
        entry["figures"]["finding_holds"] = max(per, key=per.get) == 0.01 and (
            min(per, key=per.get) == 0.001
        )
    return entry | {"complete": ran(*entry["commands"]) and len(per) == 3}


def cpu_s4_detached(c, previous: dict) -> dict:
    """S4's failing BatchNorm (statistics detached from autograd) at lr 0.01, width 16; its
    BatchNorm arm is cpu-s4-lr's lr 0.01 run."""
    scale = stages.scale(c, "resnet18_detached_bn", WIDTH)
    call, m = stages.single(c, "cpu-s4-detached", "resnet18_detached_bn", *scale)
    run_dir = c.out / "cpu-s4-detached"
    losses = curve(run_dir, "train/loss")
    figures = {
        "val_acc": m.get("val/acc_best"),
        "test_acc": m.get("test/acc"),
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_max": max(losses) if losses else None,
        "epochs": m.get("epochs"),
    }
    if (
        not m
    ):  # a run that diverged to NaN or inf ends without metrics.json: its reason is the finding
        figures["ended"] = (call.get("output_tail") or "").strip().splitlines()[-1:]
    return {"figures": figures, "commands": [call], "complete": call.get("rc") is not None}


# PBT beside the grid it replaces, on S4's learning-rate question at a size 2 cores train in half an
# hour: 8k/2k images of the JPEG copy (the first 1000 per class), 12 epochs a member or a rate, so
# the grid and the population each train 3 x 12 epochs. PBT searches lr over the grid's range.
PBT_SIZE = ["dataset.val_size=2000", "trainer.max_epochs=12"]
PBT = [
    "sweeper=pbt",
    "hydra.sweeper.params={optimizer.lr:'tag(log, interval(0.001, 0.1))'}",
    "hydra.sweeper.pbt.population=3",
]
PBT_SMOKE = ["hydra.sweeper.pbt.interval_epochs=1"]  # toy scale: 1 epoch, so intervals of 1


def epochs(study) -> int:
    """Epochs in the study's finished trials (a PBT interval counts from its parent's last epoch,
    where it went on from; a retry counts in place of the attempt it resumed)."""
    trials = study.get_trials(deepcopy=False) if study else []
    total = 0
    for t in trials:
        if t.state.name in ("COMPLETE", "PRUNED") and t.last_step is not None:
            total += t.last_step + 1 - pbt.start_epoch(t, trials)
    return total


def exploited(trial) -> bool:
    return bool(trial.user_attrs.get(contract.PBT_NEXT, {}).get("exploit"))


def cpu_pbt(c, previous: dict) -> dict:
    """PBT (sweeper=pbt, 3 members) against S4's grid of 3 fixed rates at equal epochs."""
    if c.smoke:
        common = [*stages.scale(c, "resnet18_lr"), "trainer.max_epochs=2"]
    else:
        subset = copy_subset(c.data, c.out / "cpu-pbt" / "data", 1000, 100)
        common = [WIDTH, RETRY, f"dataset.root={subset}", *PBT_SIZE]
    gcall, grid, _ = stages.sweep(c, "cpu-pbt/grid", "resnet18_lr", *common)
    pbt_args = [*PBT, *(PBT_SMOKE if c.smoke else [])]
    pcall, pbt, _ = stages.sweep(c, "cpu-pbt/pbt", "resnet18_lr", *common, *pbt_args)
    per_lr = {str(t.params["optimizer.lr"]): t.value for t in stages.finished(grid)}
    figures = {"per_lr": per_lr, "grid_best": max(per_lr.values(), default=None)}
    figures |= {"grid_epochs": epochs(grid), "grid_wall_s": gcall["wall_s"]}
    best = max(stages.finished(pbt), key=lambda t: t.value, default=None)
    if best is not None:
        trials = pbt.get_trials(deepcopy=False)
        figures |= {
            "pbt_best": best.value,
            "pbt_member": best.user_attrs.get(contract.PBT_MEMBER),
            "schedule": pbt_replay.segments(pbt, best),
            "exploits": sum(exploited(t) for t in trials),
            "pbt_epochs": epochs(pbt),
            "pbt_wall_s": pcall["wall_s"],
        }
    members = len(stages.finished(pbt))  # each member's last interval completes
    done = len(per_lr) == 3 and members == 3 and ran(gcall, pcall)
    return {"figures": figures, "commands": [gcall, pcall], "complete": done}


ALL = {
    "cpu-s2": cpu_s2,
    "cpu-s0": cpu_s0,
    "cpu-s4-lr": cpu_s4_lr,
    "cpu-s4-detached": cpu_s4_detached,
    "cpu-pbt": cpu_pbt,
}
