"""The arms, in the order they run: the stock sweeper first, as its result sets the target.
Each is a module with NAME, HOW (a line for the README) and `run(problem, seed, out) -> record`
(or {"seed": ..., "skipped": reason} where it cannot run here)."""

from benchmarks.peers import optuna_script, ours, promote, ray_tune, stock

ARMS = {m.NAME: m for m in (stock, optuna_script, ray_tune, ours, promote)}
