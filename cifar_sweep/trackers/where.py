"""Where a sweep's or run's logs went, in a line per tracker (MLflow's runs say their own)."""

from pathlib import Path


def where_logged(loggers, folder) -> list[str]:
    """How to look at the CSV files and W&B runs under `folder` (TensorBoard: the `next:` line)."""
    loggers, folder = loggers or {}, Path(folder).absolute()
    lines = []
    if loggers.get("csv") is not None:
        lines.append(f"csv: one metrics.csv per run, seed and fold: {folder}/**/csv/metrics.csv")
    wandb = loggers.get("wandb")
    if wandb is not None and wandb.get("mode") == "offline":
        lines.append(
            f"wandb: offline runs under {folder}; to upload them: wandb login, then "
            f"find {folder} -type d -name 'offline-run-*' -exec wandb sync {{}} +"
        )
    elif wandb is not None:
        lines.append(f"wandb: project {wandb.project} ({wandb.get('mode') or 'online'})")
    return lines


def looks_with_tensorboard(loggers) -> bool:
    return (loggers or {}).get("tensorboard") is not None
