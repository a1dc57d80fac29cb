"""Worker processes: the launching process starts N copies of the sweep, each on its devices.

A worker is the same command with `workers=1`, its own index and one device, or one group of
`trainer.devices=k` devices when each trial trains on k (its trials run as processes of their own:
ranks.py): it asks the study for its next trial as soon as its last one ends, with no batch
barrier. Workers take the devices (groups) round-robin (more workers than GPUs share one) and an
equal share of the CPU cores. The launching process waits for them all; Ctrl-C in the terminal
reaches every worker (one process group), and each records its interrupted trial before it exits. A
SIGTERM sent to the launching process alone is passed on to the workers, which stop as loop.py
says.
"""

import logging
import os
import signal
import subprocess
import sys

from omegaconf import DictConfig, ListConfig

from cifar_sweep.errors import UserError
from cifar_sweep.sweep.contract import quoted

log = logging.getLogger(__name__)
PARENT = "CIFAR_SWEEP_WORKER_OF_A_SWEEP"  # set in the environment of the workers `run` starts
OWN_KEYS = (
    "hydra.sweep.dir",
    "hydra.sweeper.workers",
    "hydra.sweeper.worker",
    "hydra.sweeper.devices",
    "hydra.mode",
)


def device_ids(devices) -> list[str]:
    """`hydra.sweeper.devices` as a list of device ids: CUDA indices as strings, or "cpu"."""
    if devices == "auto":
        import torch  # only here: the plain sweep path never needs it

        return [str(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    if not isinstance(devices, list | ListConfig) or not devices:
        raise UserError(f"hydra.sweeper.devices={devices}: use auto, or a list such as [0, 1]")
    for d in devices:
        if d != "cpu" and (isinstance(d, bool) or not isinstance(d, int) or d < 0):
            raise UserError(
                f"hydra.sweeper.devices: {d!r} is not a device index (0, 1, ...) or cpu"
            )
    return [str(d) for d in devices]


def groups(devices, *, per_trial: int, accelerator: str) -> list[str]:
    """The devices workers take, one entry per trial at a time: "0" or "cpu" when each trial
    trains on one device; with `per_trial` = k > 1, groups of k as labels ("0,1"): explicit
    groups as given (`[[0,1],[2,3]]`), a flat list (auto: every visible GPU) cut in order."""
    if per_trial > 1 and devices == "auto" and accelerator == "cpu":
        return ["cpu"]  # CPU ranks: no device to share out
    nested = isinstance(devices, list | ListConfig) and any(
        isinstance(d, list | ListConfig) for d in devices
    )
    if not nested:
        ids = device_ids(devices)
        if per_trial == 1:
            return ids
        gpus = [d for d in ids if d != "cpu"]
        if len(gpus) % per_trial:
            shown = devices if devices == "auto" else f"[{', '.join(ids)}]"
            raise UserError(
                f"hydra.sweeper.devices={shown}: {len(gpus)} GPU(s) do not make groups of "
                f"trainer.devices={per_trial}; give a multiple of {per_trial} devices, or the "
                "groups themselves: hydra.sweeper.devices=[[0,1],[2,3]]"
            )
        cut = [",".join(gpus[i : i + per_trial]) for i in range(0, len(gpus), per_trial)]
        return cut + ["cpu"] * (len(ids) - len(gpus))
    found = []
    for group in devices:
        ids = device_ids(group if isinstance(group, list | ListConfig) else [group])
        if len(ids) != per_trial and ids != ["cpu"]:
            raise UserError(
                f"hydra.sweeper.devices: the group [{', '.join(ids)}] has {len(ids)} "
                f"device(s), but each trial trains on trainer.devices={per_trial}"
            )
        found.append(",".join(ids))
    return found


def pin(devices, *, per_trial: int, accelerator: str) -> str:
    """In a worker given one device, or one group: make those the only visible CUDA devices
    (before torch starts CUDA); return their label for the trials' records."""
    if devices == "auto":
        return os.environ.get("CUDA_VISIBLE_DEVICES", "auto")
    labels = groups(devices, per_trial=per_trial, accelerator=accelerator)
    if len(labels) != 1:
        what = "device" if per_trial == 1 else f"group of {per_trial} devices"
        raise UserError(
            f"hydra.sweeper.devices={labels}: one process takes one {what}; "
            "set hydra.sweeper.workers to use several"
        )
    label = labels[0]
    visible = given()
    if label == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    else:  # indices among the devices this process was given
        ids = label.split(",")
        check_given(ids)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(
            visible[int(d)] if visible else d for d in ids
        )
    return label


def given() -> list[str] | None:
    """The devices CUDA_VISIBLE_DEVICES gives this process; None when it does not say."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",") if visible else None


def check_given(ids: list[str]) -> None:
    """Each index names one of the devices CUDA_VISIBLE_DEVICES gives this process."""
    visible = given()
    for d in ids:
        if visible and d != "cpu" and int(d) >= len(visible):
            raise UserError(
                f"hydra.sweeper.devices: {d} is not a device here: indices count the "
                f"{len(visible)} device(s) of CUDA_VISIBLE_DEVICES={','.join(visible)}, "
                f"so use 0 to {len(visible) - 1}"
            )


def started_by_a_sweep() -> bool:
    """Whether this process is a worker that another sweep process started (`run`): such a
    worker neither seeds the study nor writes the report; its launching process does."""
    return os.environ.get(PARENT) == "1"


def command(config: DictConfig, worker: int, device: str) -> list[str]:
    """This process's own command line again (`sys.orig_argv`: the module or script, every flag
    and override), as worker `worker` on `device` (a group "0,1": the list [0,1]), in the same
    sweep folder. Overrides added at the end win: Hydra keeps an override's last value."""
    return [
        sys.executable,
        *sys.orig_argv[1:],
        f"hydra.sweep.dir={quoted(str(config.hydra.sweep.dir))}",
        "hydra.sweeper.workers=1",
        f"hydra.sweeper.worker={worker}",
        f"hydra.sweeper.devices=[{device}]",
    ]


def run(config: DictConfig, workers: int, devices, *, per_trial: int, accelerator: str) -> None:
    """Start `workers` worker processes and wait for them all."""
    ids = groups(devices, per_trial=per_trial, accelerator=accelerator)
    check_given([d for label in ids for d in label.split(",")])  # before any worker starts
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = str(max(1, (cores or 1) // workers))  # each worker's share of the cores
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, PARENT: "1"}
    procs = []
    for i in range(workers):
        device = ids[i % len(ids)]
        procs.append(subprocess.Popen(command(config, i, device), env=env))
        log.info("worker %d: device %s, %s CPU threads, pid %d", i, device, threads, procs[-1].pid)

    def forward(signum: int, frame) -> None:  # scancel signals this process: pass it on
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [f"worker {i} (exit {c})" for i, c in enumerate(codes) if c]
    if failed:
        raise UserError(f"{', '.join(failed)} stopped with an error; see its lines above")


def _stop(procs: list[subprocess.Popen]) -> None:
    """After Ctrl-C: give the workers time to record their interrupted trials, then insist."""
    for sig, grace in ((None, 60), (signal.SIGINT, 30), (signal.SIGKILL, 10)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            if sig is not None:
                p.send_signal(sig)
        for p in alive:
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
                break
