"""PBT's explore, as Ray Tune's `_explore` does it, within the search space's bounds.

Each value of an exploiting member is perturbed: a continuous (or integer) one is multiplied by
one of the `perturb` factors (Ray's perturbation_factors, 1.2 and 0.8), or, with probability
`resample_p`, drawn afresh from its distribution; a categorical one is drawn afresh (Ray shifts a
list's value to a neighbour instead; the issue asked for a fresh choice). Unlike Ray, the result
is clipped to the distribution's bounds and rounded to its step: Optuna would otherwise record a
value its own distribution does not contain.

Fresh draws are Optuna's RandomSampler's (public, and it knows log scales, steps and integers);
only the clip is hand-written.
"""

import random

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import RandomSampler


def explore(
    values: dict,
    distributions: dict[str, BaseDistribution],
    *,
    rng: random.Random,
    perturb: list[float],
    resample_p: float,
) -> dict:
    """`values` perturbed or drawn afresh, each within its distribution."""
    fresh = RandomSampler(seed=rng.randrange(2**32))
    explored = {}
    for name, value in values.items():
        dist = distributions[name]
        if isinstance(dist, CategoricalDistribution) or rng.random() < resample_p:
            # RandomSampler ignores the study and trial it is handed
            explored[name] = fresh.sample_independent(None, None, name, dist)
        else:
            explored[name] = within(dist, value * rng.choice(perturb))
    return explored


def within(dist: FloatDistribution | IntDistribution, value: float) -> float | int:
    """`value` clipped to [low, high] and rounded to the distribution's step (integers: 1)."""
    step = dist.step if dist.step is not None else (1 if isinstance(dist, IntDistribution) else 0)
    if step:
        value = dist.low + round((value - dist.low) / step) * step
    value = min(max(value, dist.low), dist.high)
    if isinstance(dist, IntDistribution):
        return int(value)
    return float(value)
