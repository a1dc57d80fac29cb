"""The README section "Against the peers", written from the results file: the table of medians
(min-max) over seeds, our time-to-target ratios against the goal, and the plot. It sits between two
marker comments and is replaced whole, so the rest of the README is never touched."""

import statistics
from pathlib import Path

from benchmarks import readme_section
from benchmarks.peers import ours, promote, ray_tune, stock
from benchmarks.peers.arms import ARMS

BEGIN, END = "<!-- peers -->", "<!-- end peers -->"
# issue 26's goal, medians over seeds: ours / peer time to target at most this
GOAL = {stock.NAME: 0.5, ray_tune.NAME: 0.8}
POINTS = 0.5  # and a final best at most this many points below the peer's


def spread(values: list, fmt: str = "{:.0f}") -> str:
    """median (min-max) of the values that are there."""
    xs = [v for v in values if v is not None]
    if not xs:
        return "-"
    median = fmt.format(statistics.median(xs))
    return median if len(xs) == 1 else f"{median} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def row(name: str, a: dict) -> str:
    if a.get("skipped") and not a["seeds"]:
        return f"| {name} | {ARMS[name].HOW} | skipped: {a['skipped']} |" + " |" * 7
    pct = "{:.2%}"
    cells = [
        spread(a["time_to_target_s"]),
        f"{sum(a['reached'])}/{len(a['seeds'])}",
        spread(a["best_val"], pct),
        spread(a["wall_s"]),
        spread(a["epochs"]),
        spread(a["pruned"]),
        spread(a["setup_s"], "{:.1f}"),
        spread(a["idle_core_s"]),
    ]
    return f"| {name} | {ARMS[name].HOW} | " + " | ".join(cells) + " |"


def against(results: dict) -> list[str]:
    """Our two arms' medians against each peer's, and whether the goal holds."""
    arms, lines = results["arms"], []
    for mine in (ours.NAME, promote.NAME):
        me = arms.get(mine)
        if not me or not me["seeds"]:
            continue
        for peer, goal in GOAL.items():
            them = arms.get(peer)
            if not them or not them["seeds"]:
                continue
            ratio = statistics.median(me["time_to_target_s"]) / statistics.median(
                them["time_to_target_s"]
            )
            points = 100 * (statistics.median(me["best_val"]) - statistics.median(them["best_val"]))
            met = ratio <= goal and points >= -POINTS
            lines.append(
                f"- {mine} against {peer}: time to target {ratio:.2f}x theirs (goal <= {goal}), "
                f"final best {points:+.2f} points (goal >= -{POINTS}): "
                f"{'met' if met else 'not met'}"
            )
    return lines


def section(results: dict, source: Path, plot: Path) -> str:
    target = results.get("target")
    lines = [
        "## Against the peers",
        "",
        f"Written by `make bench-peers` from `{source}`: {results.get('machine')}; "
        f"{results.get('problem')}. Seed by seed, each arm runs one study, one arm after "
        "another; its clock starts when its command does. The target is the stock sweeper's"
        f" median final best ({'-' if target is None else f'{target:.2%}'}); time to target "
        "is when an arm's best so far first reaches it (a study that never does counts its "
        "wall time; `reached` says how many did). A trial counts with its `val/acc_best` at"
        " the last epoch it trained, whether it completed or was stopped early, from the "
        "moment its orchestrator holds the result (benchmarks/peers/record.py). Set-up: "
        "seconds before the first trial starts; idle: 2 cores x wall time minus the trials'"
        " busy time. Medians over seeds (min-max).",
        "",
        "| arm | how | time to target s | reached | best val | wall s | epochs | pruned "
        "| set-up s | idle core-s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(row(name, results["arms"][name]) for name in ARMS if name in results["arms"]),
        "",
        *against(results),
        "",
        f"![anytime curves: best validation accuracy so far against wall seconds]({plot})",
    ]
    return "\n".join(lines) + "\n"


def update(readme: Path, results: dict, source: Path, plot: Path) -> None:
    """Replace (or add, before "## Limits") the section in `readme`."""
    readme_section.put(readme, BEGIN, END, section(results, source, plot))
