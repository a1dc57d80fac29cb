"""The README section "Measured on <gpu>", written from the campaign's results file.

Published figures stand beside ours; a stage not yet run says so. The section sits between two
marker comments and is replaced whole, so the rest of the README is never touched.
"""

from pathlib import Path

from benchmarks import readme_section
from benchmarks.campaign.cpu import ALL as CPU_STAGES
from benchmarks.campaign.stages import ALL

JPEG = "CIFAR-10 (JPEG q75 copy)"
PUBLISHED = {
    "s2-nas": "72.62% val; 3 layers of 64 channels, kernels [5, 3, 5], lr 0.00113",
    "s4-lr": "val 80.28 / 85.82 / 84.54 % at lr 0.001 / 0.01 / 0.1",
    "s4-detached": "detached BatchNorm fails near 22% (loss above 80); BatchNorm learns",
    "s0": "A 0.7218 val / 0.7199 test, 5.94 s/epoch; B 0.5973 / 0.5944, 2.58 s/epoch",
    "s1": "91.91% test (20 trials)",
    "s4-budget": "95.10% test after 300 epochs; goal: >= 95.1% in <= 60 epochs",
    "airbench": "airbench94: 94% in 3.29 s on an A100",
    "throughput": "goal: <= 1.0 s per ResNet-18 epoch (45k, bf16); runner <= 1.05x bare loop",
    "workers": "-",
    "gpu-tests": "-",
}
WHAT = {
    "gpu-tests": "`pytest -m gpu`",
    "throughput": "ResNet-18, 45k training images: best s/epoch through the runner",
    "s2-nas": "`nas_hyperband`: 10 trials x 5 epochs, Hyperband; 30-epoch retrain",
    "s4-lr": "`resnet18_lr`: 3 x 15 epochs",
    "s4-detached": "`resnet18_detached_bn`: 15 epochs",
    "s0": "`seq_vs_branch_random`, then the best of each model retrained",
    "s1": "`resnet_dense_random`, reduced trial count",
    "workers": "`nas_cnn` sweep of 8 trials with 1, 2, 4 workers on one GPU",
    "s4-budget": "`resnet18_budget`: S4 pushed for speed",
    "airbench": "PyPI airbench 0.1.8 on our tensors, and `fast94` through the runner",
}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def summary(name: str, entry: dict) -> str:
    """One line of a stage's figures."""
    f = entry.get("figures", {})
    if name == "gpu-tests":
        return ", ".join(f"{f.get(k, 0)} {k}" for k in ("passed", "failed", "skipped"))
    if name == "throughput":
        rows = f.get("rows", [])
        if not rows:
            return "no configuration measured"
        best = min(rows, key=lambda r: r["runner_s_per_epoch"])
        return (
            f"{best['runner_s_per_epoch']:.2f} s/epoch at batch {best['batch']}"
            f"{' compiled' if best['compile'] else ''}, "
            f"runner/bare {best['runner_over_bare']:.3f}, "
            f"MFU {best['mfu']:.2f}"
        )
    if name == "s2-nas":
        return (
            f"best val {_pct(f.get('best_val_acc'))}: {f.get('layers')} layers "
            f"{f.get('channels')}, kernels {f.get('kernels')}, lr {f.get('lr') or 0:.3g}; "
            f"retrain test {_pct(f.get('retrain_test_acc'))}"
        )
    if name == "s4-lr":
        per = sorted(f.get("per_lr", {}).items(), key=lambda kv: float(kv[0]))
        return (
            " / ".join(_pct(v["val_acc"]) for _, v in per)
            + " at lr "
            + " / ".join(k for k, _ in per)
        )
    if name == "s4-detached":
        per = f.get("per_norm", {})
        return "; ".join(
            f"{k} {_pct(v['val_acc'])}, train loss {v['train_loss']:.3g}"
            for k, v in per.items()
            if v.get("train_loss") is not None
        )
    if name == "s0":
        m, r = f.get("models", {}), f.get("ratios", {})
        parts = [
            f"{k} {_pct(v['val_acc'])} val / {_pct(v['test_acc'])} test, "
            f"{v['s_per_epoch']:.2f} s/epoch"
            for k, v in m.items()
            if v.get("s_per_epoch")
        ]
        if r:
            parts.append(
                f"A/B: s/epoch {r['s_per_epoch_a_over_b']:.2f}, FLOPs "
                f"{r['flops_a_over_b']:.2f}, params {r['params_a_over_b']:.2f}"
            )
        return "; ".join(parts) or "no model retrained"
    if name == "s1":
        return f"best of {f.get('trials')} trials: {_pct(f.get('test_acc'))} test"
    if name == "workers":
        return "; ".join(
            f"{n} workers {r['wall_s']:.0f} s ({r['per_min']:.1f} trials/min)"
            for n, r in f.get("rows", {}).items()
        )
    if name == "s4-budget":
        seconds = f.get("total_s") or 0
        return f"{_pct(f.get('test_acc'))} test in {f.get('epochs')} epochs, {seconds:.0f} s"
    if name == "airbench":
        return f.get("summary", "not run")
    return ""


CPU_PUBLISHED = {
    "cpu-s2": "3 layers of 64, kernels [5, 3, 5], lr 0.00113: 72.62% val",
    "cpu-s0": "A 72.18% val / 71.99% test, gap 0.1119, ~37 epochs, 5.94 s/epoch; B 59.73% / "
    "59.44%, gap 0.0865, ~55 epochs, 2.58 s/epoch (A/B 2.3x the time, 3x the FLOPs)",
    "cpu-s4-lr": "val 80.28 / 85.82 / 84.54 % at lr 0.001 / 0.01 / 0.1 (width 64): 0.01 best",
    "cpu-s4-detached": "detached BatchNorm fails: loss above 80, about 22% (width 64)",
    "cpu-pbt": "(no published figure: PBT against the grid it replaces, at equal epochs)",
}
CPU_WHAT = {
    "cpu-s2": "`nas_hyperband` as published: TPE + Hyperband, 10 trials x 5 epochs, 45k/5k/10k; "
    "the best retrained 30 epochs on 50k and tested",
    "cpu-s0": "model A (`seq_cnn`) and B (`two_branch_cnn`) as S0's final runs: 40k/10k/10k, "
    "Adam lr 0.001, batch 128, early stopping (val/loss, 5), plateau schedule (2), up to 60 epochs",
    "cpu-s4-lr": "`resnet18_lr model.width=16`: SGD 0.9, crop+flip, 40k/10k/10k, 15 epochs per lr",
    "cpu-s4-detached": "`resnet18_detached_bn model.width=16`: lr 0.01, 15 epochs",
    "cpu-pbt": "`resnet18_lr model.width=16` on 8k/2k images: the grid (lr 0.001 / 0.01 / 0.1, "
    "12 epochs each) beside `sweeper=pbt` (3 members, lr in [0.001, 0.1], 12 epochs each)",
}


def cpu_summary(name: str, entry: dict, results: dict) -> str:
    """One cell of a CPU stage's figures."""
    f = entry.get("figures", {})
    if name == "cpu-s2":
        return (
            f"{f.get('layers')} layers {f.get('channels')}, kernels {f.get('kernels')}, "
            f"lr {f.get('lr') or 0:.3g}: {_pct(f.get('best_val_acc'))} val; retrain "
            f"{_pct(f.get('retrain_test_acc'))} test; {f.get('epochs_trained')} of "
            f"{f.get('unpruned_epochs')} epochs trained ({f.get('pruned_trials')} trials pruned)"
        )
    if name == "cpu-s0":
        parts = [
            f"{arm} {_pct(m['val_acc'])} val / {_pct(m['test_acc'])} test, gap "
            f"{m['train_val_gap']:.4f}, {m['epochs']} epochs, {m['s_per_epoch']:.1f} s/epoch"
            for arm, m in f.get("models", {}).items()
            if m.get("train_val_gap") is not None
        ]
        r = f.get("ratios")
        if r:
            time_ratio, flops_ratio = r["s_per_epoch_a_over_b"], r["flops_a_over_b"]
            follows = 2 / 3 <= time_ratio / flops_ratio <= 3 / 2  # within 1.5x either way
            parts.append(
                f"A/B {time_ratio:.2f}x the time per epoch for {flops_ratio:.2f}x the FLOPs: "
                f"runtime {'follows' if follows else 'does not follow'} FLOPs here"
            )
        return "; ".join(parts) or "no model trained yet"
    if name == "cpu-s4-lr":
        text = summary("s4-lr", entry)
        if "finding_holds" in f:
            text += f" ({'0.01 best, 0.001 worst: holds' if f['finding_holds'] else 'differs'})"
        return text
    if name == "cpu-pbt":
        return pbt_summary(f)
    if name == "cpu-s4-detached":
        if f.get("val_acc") is None:
            return f"ended: {' '.join(f.get('ended', [])) or 'no figures'}"
        batch = results.get("cpu-s4-lr", {}).get("figures", {}).get("per_lr", {}).get("0.01", {})
        return (
            f"detached {_pct(f['val_acc'])} val, training loss up to "
            f"{f.get('train_loss_max') or 0:.3g}; BatchNorm (cpu-s4-lr, lr 0.01) "
            f"{_pct(batch.get('val_acc'))}"
        )
    return ""


def pbt_summary(f: dict) -> str:
    """The grid's rates and best beside PBT's best and the schedule it found."""
    grid = " / ".join(
        f"{_pct(v)}" for _, v in sorted(f.get("per_lr", {}).items(), key=lambda kv: float(kv[0]))
    )
    text = f"grid {grid} (best {_pct(f.get('grid_best'))}) in {f.get('grid_epochs')} epochs"
    if f.get("pbt_best") is None:
        return text + "; PBT not finished"
    schedule = ", ".join(
        f"epoch {s['epoch']}: lr {s['lr']:.3g}" for s in f.get("schedule", []) if "lr" in s
    )
    return (
        f"{text}; PBT {_pct(f['pbt_best'])} in {f.get('pbt_epochs')} epochs, "
        f"{f.get('exploits')} exploit{'' if f.get('exploits') == 1 else 's'}; its best member's "
        f"schedule: {schedule}"
    )


def cpu_section(device: str, source, results: dict) -> str:
    named = Path(source)  # the other CPU results files beside it are shown too
    files = f"`{named.parent}/cpu-*.json`" if named.name.startswith("cpu-") else f"`{named}`"
    lines = [
        "## Measured on the CPU (2 cores)",
        "",
        f"Written by `make campaign PROFILE=cpu` from {files}: one training process "
        f"at a time with 2 threads, on the machine each row names. Data: {JPEG}. Each stage's "
        "command: `make campaign PROFILE=cpu STAGES=<stage>`; a stage cut short goes on from its "
        "last epoch when run again, and its wall time adds up over the runs.",
        "",
        "| stage | what | published | ours | wall min | machine |",
        "|---|---|---|---|---|---|",
    ]
    for name in CPU_STAGES:
        entry = results.get(name)
        ours = "not measured yet" if entry is None else cpu_summary(name, entry, results)
        if entry is not None and not entry.get("complete"):
            ours += " (partial: run the stage again to go on)"
        wall = "-" if entry is None else f"{entry['wall_s'] / 60:.0f}"
        machine = "-" if entry is None else entry.get("device", device)
        lines.append(
            f"| {name} | {CPU_WHAT[name]} | {CPU_PUBLISHED[name]} | {ours} | {wall} | {machine} |"
        )
    return "\n".join(lines) + "\n"


def throughput_table(entry: dict) -> list[str]:
    lines = [
        "",
        "| compile | batch | runner s/epoch | bare s/epoch | runner/bare | images/s | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in entry.get("figures", {}).get("rows", []):
        lines.append(
            f"| {'on' if r['compile'] else 'off'} | {r['batch']} | "
            f"{r['runner_s_per_epoch']:.3f} | {r['bare_s_per_epoch']:.3f} | "
            f"{r['runner_over_bare']:.3f} | {r['runner_images_per_s']:,.0f} | "
            f"{r['mfu']:.3f} |"
        )
    rate = entry.get("figures", {}).get("matmul_tflops")
    if rate:
        lines.append(
            f"\nMFU: training FLOPs (3 x forward) x images/s over a bf16 matrix product "
            f"measured at {rate:.3g} TFLOP/s in the same run. {entry.get('device')}, "
            f"torch {entry.get('torch')}."
        )
    return lines


def section(device: str, source, results: dict) -> str:
    lines = [
        f"## Measured on {device}",
        "",
        f"Written by `make campaign` from `{source}`. Data: {JPEG}, 45k/5k/10k unless the "
        "study says otherwise; a trial count below the published one is the stage's budget "
        "(8 minutes per stage).",
        "",
        "| stage | what | published | ours | wall s |",
        "|---|---|---|---|---|",
    ]
    for name in ALL:
        entry = results.get(name)
        ours = "not measured yet" if entry is None else summary(name, entry)
        if entry is not None and not entry.get("complete"):
            ours += " (partial: the stage's time ran out)"
        wall = "-" if entry is None else f"{entry['wall_s']:.0f}"
        lines.append(f"| {name} | {WHAT[name]} | {PUBLISHED[name]} | {ours} | {wall} |")
    if "throughput" in results:
        lines += throughput_table(results["throughput"])
    return "\n".join(lines) + "\n"


def update(readme: Path, device: str, source, results: dict) -> None:
    """Replace (or add, before "## Limits") the section for `device` (or the CPU's) in `readme`."""
    on_cpu = any(name in CPU_STAGES for name in results)
    key = "cpu" if on_cpu else device
    text = cpu_section(device, source, results) if on_cpu else section(device, source, results)
    readme_section.put(readme, f"<!-- campaign: {key} -->", f"<!-- end campaign: {key} -->", text)
