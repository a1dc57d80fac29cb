"""A comparison table of final runs (one per model of a study), saved as CSV and Markdown."""

import csv
from pathlib import Path

COLUMNS = {  # header: how to get it from (search value, metrics)
    "search val acc": lambda v, m: v,
    "val acc": lambda v, m: m.get("val/acc_best"),
    "test acc": lambda v, m: m.get("test/acc"),
    "train-val gap": lambda v, m: (
        m["train/acc"] - m["val/acc_best"] if "val/acc_best" in m else None
    ),
    "val-test gap": lambda v, m: m["val/acc_best"] - m["test/acc"] if "val/acc_best" in m else None,
    "epochs": lambda v, m: m.get("epochs"),
    "s/epoch": lambda v, m: m.get("time/epoch_s"),
    "total s": lambda v, m: m.get("time/total_s"),
    "params": lambda v, m: m.get("model/params"),
    "MFLOPs/image": lambda v, m: m["model/flops"] / 1e6 if "model/flops" in m else None,
    "peak GPU GB": lambda v, m: m.get("gpu/peak_mem_gb"),
}


def _column_format(values: list) -> str:
    """One format per column, so its numbers line up: 4 decimals when any value needs them
    (accuracies, gaps, seconds), else whole numbers with thousands separators (epochs, params)."""
    numbers = [x for x in values if isinstance(x, float | int)]
    if any(isinstance(x, float) and not x.is_integer() and abs(x) < 1000 for x in numbers):
        return "{:.4f}"
    return "{:,.0f}"


def _fmt(x, fmt: str) -> str:
    if x is None:
        return "-"
    return fmt.format(x) if isinstance(x, float | int) else str(x)


def table(runs: dict[str, tuple[float | None, dict]], out_dir: Path) -> str:
    """runs: label -> (the trial's search value, the final run's metrics). Writes
    comparison.csv and comparison.md into out_dir and returns the Markdown table."""
    rows = [[label, *(f(v, m) for f in COLUMNS.values())] for label, (v, m) in runs.items()]
    with open(out_dir / "comparison.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["run", *COLUMNS], *rows])
    md = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    formats = [_column_format([row[i] for row in rows]) for i in range(len(COLUMNS) + 1)]
    md += [
        "| " + " | ".join(_fmt(x, f) for x, f in zip(row, formats, strict=True)) + " |"
        for row in rows
    ]
    text = "\n".join(md) + "\n"
    (out_dir / "comparison.md").write_text(text)
    return text
