"""PBT's lineage (plots/lineage.png): one row per member, its intervals as bars along the epochs,
coloured by the learning rate they trained with, and an arrow per exploit from the member whose
checkpoint was copied to the member that went on from it.

Hand-written: neither Optuna nor Ray Tune draws one (Ray's PBT writes a policy log to replay).
"""

import matplotlib.pyplot as plt
import optuna
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from optuna.trial import TrialState

from cifar_sweep.sweep.contract import PBT_MEMBER, PBT_PARENT
from cifar_sweep.sweep.pbt import start_epoch

ENDED = (TrialState.COMPLETE, TrialState.PRUNED)


def plot(study: optuna.Study):
    """The Axes of the lineage of the study's ended PBT intervals."""
    every = study.get_trials(deepcopy=False)  # a trial's number is its index here
    trials = [t for t in every if PBT_MEMBER in t.user_attrs and t.state in ENDED and t.params]
    if not trials:
        raise ValueError("no PBT interval has ended")
    key = next((k for k in trials[0].params if k.endswith("lr")), next(iter(trials[0].params)))
    values = [t.params[key] for t in trials]
    positive = min(values) > 0 and max(values) > min(values)
    norm = (LogNorm if positive else Normalize)(min(values), max(values))
    cmap = plt.get_cmap("viridis")
    members = sorted({t.user_attrs[PBT_MEMBER] for t in trials})
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.5 * len(members)))
    for t in trials:
        member, start = t.user_attrs[PBT_MEMBER], start_epoch(t, every)
        ax.barh(member, t.last_step + 1 - start, left=start, color=cmap(norm(t.params[key])))
        parent = every[t.user_attrs[PBT_PARENT]] if PBT_PARENT in t.user_attrs else None
        if parent is not None and parent.user_attrs[PBT_MEMBER] != member:  # an exploit
            ax.annotate(
                "",
                xy=(start, member),
                xytext=(start, parent.user_attrs[PBT_MEMBER]),
                arrowprops={"arrowstyle": "->", "color": "tab:red"},
            )
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=key)
    ax.set_yticks(members, [f"member {m}" for m in members])
    ax.set_xlabel("epoch")
    ax.set_title(f"{study.study_name}: PBT members by {key}; arrows: exploits")
    return ax
