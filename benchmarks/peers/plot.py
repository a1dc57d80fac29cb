"""`peers-<cpu>.png`: each arm's anytime curve (best validation accuracy so far against wall
seconds), the median over seeds with a band from the lowest to the highest, and the target."""

import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def best_at(curve: list, grid: np.ndarray) -> np.ndarray:
    """A curve's best so far at each grid time: NaN before its first result."""
    values = np.full(len(grid), np.nan)
    for seconds, best in curve:
        values[grid >= seconds] = best
    return values


def draw(results: dict, path: Path, title: str) -> None:
    """Write the plot of every arm with at least one study."""
    fig, ax = plt.subplots(figsize=(8, 5))
    horizon = max((w for a in results["arms"].values() for w in a["wall_s"]), default=1.0)
    grid = np.linspace(0, horizon, 400)
    for arm, a in results["arms"].items():
        if not a["curves"]:
            continue
        ys = np.array([best_at(c, grid) for c in a["curves"]])
        ys[:, grid > max(a["wall_s"])] = np.nan  # drawn until the arm's last study ended
        with warnings.catch_warnings():  # columns before any seed's first result are all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            median, low, high = (f(ys, axis=0) for f in (np.nanmedian, np.nanmin, np.nanmax))
        seeds = len(a["curves"])
        (line,) = ax.plot(grid, median, label=f"{arm} ({seeds} seed{'s' * (seeds > 1)})")
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    if results.get("target") is not None:
        ax.axhline(results["target"], color="gray", linestyle="--", label="target")
    ax.set_xlabel("wall seconds since the arm's command started")
    ax.set_ylabel("best val/acc_best so far")
    ax.set_title(textwrap.fill(title, 110), fontsize=8)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
