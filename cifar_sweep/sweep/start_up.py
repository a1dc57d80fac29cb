"""Start-up points that do not depend on the number of workers, nor on a rerun.

A seeded sampler draws its first points at random from its seed (TPE's and GP's
n_startup_trials, every point of a random search). One worker draws them as one sequence; several
workers each drew their own (a second worker reseeds, or it would repeat the first one's points),
and a rerun reseeded too. Here each process draws the sequence its seeded sampler would draw
alone, and the n-th new point of the study takes the sequence's n-th point, whichever worker asks
for it: the same seed gives the same start-up points with one worker or four, before and after a
crash, and the same as other tools that draw with that seed. Retries, promotions, queued and
warm-started points are not new points; what they tell the sampler shortens the sequence.
"""

import copy

import optuna

from cifar_sweep.sweep import optuna_private as private
from cifar_sweep.sweep.contract import IMPORTED, POINT, START_UP, classify
from cifar_sweep.sweep.pbt import PBTPruner


class StartUp:
    """The seeded start-up sequence of `study`'s sampler, drawn through `suggest` (trials -> the
    sweep's suggestions), as the sampler was when this was built: before any draw or reseed."""

    def __init__(self, study: optuna.Study, suggest, n_trials: int):
        self.study, self.suggest = study, suggest
        sampler = study.sampler
        length = getattr(sampler, "_n_startup_trials", None)
        if length is not None:  # points queued by hand or copied in count as start-up trials
            length -= sum(map(_informs, study.get_trials(deepcopy=False)))
        if isinstance(sampler, optuna.samplers.RandomSampler):
            length = n_trials  # every point is a start-up point, whatever came before
        if isinstance(study.pruner, PBTPruner):  # PBT draws and queues its own members
            length = None
        self.length = max(length or 0, 0)
        self.pristine = self.sampler = None
        if self.length:
            self.pristine = copy.deepcopy(sampler)
            self.sampler = copy.deepcopy(sampler)  # draws the sequence in a scratch study
        self.scratch: optuna.Study | None = None
        self.points: list[dict] = []

    def take(self, trial: optuna.trial.Trial) -> None:
        """A new point (nothing queued it) takes the sequence's next point, while there is one."""
        if not self.length:
            return
        trials = self.study.get_trials(deepcopy=False)
        if private.FIXED in trials[trial.number].system_attrs:
            return  # a retry, a promotion, a point queued by hand
        index = sum(_new(t) for t in trials if t.number < trial.number)
        if index >= self.length:
            return
        point = self._point(index)
        private.fix_params(self.study, trial, point)
        private.set_system_attr(self.study, trial, START_UP, index)

    def drawn(self) -> optuna.samplers.BaseSampler:
        """The seeded sampler past the whole sequence: where one worker's own draws go on (a
        draw after it, or a random fallback, repeats none of its points)."""
        if self.length:
            self._point(self.length - 1)
        return private.with_random_state(self.pristine, self.sampler)

    def _point(self, index: int) -> dict:
        """The sequence's point `index`, drawing it and those before it on first use."""
        if self.scratch is None:
            verbosity = optuna.logging.get_verbosity()
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
            try:  # no trial of it is told, so each draw is a start-up draw
                directions = self.study.directions
                self.scratch = optuna.create_study(sampler=self.sampler, directions=directions)
            finally:
                optuna.logging.set_verbosity(verbosity)
        while len(self.points) <= index:
            t = self.scratch.ask()
            self.suggest([t])
            self.points.append(dict(t.params))
        return self.points[index]


def _new(t: optuna.trial.FrozenTrial) -> bool:
    """Whether the sampler drew (or draws) the trial's point: not queued, not copied in."""
    if START_UP in t.system_attrs:
        return True
    return private.FIXED not in t.system_attrs and classify(t) != IMPORTED


def _informs(t: optuna.trial.FrozenTrial) -> bool:
    """A point that informs the sampler without being drawn: warm-started, or queued by hand
    (not a retry or promotion of a point the study already has)."""
    return not _new(t) and (classify(t) == IMPORTED or POINT not in t.user_attrs)
