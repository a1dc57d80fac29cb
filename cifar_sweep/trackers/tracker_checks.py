"""The `logger` and `callbacks` groups checked before any training: every node names a
`_target_`, a tracker's package is installed, an MLflow server answers."""

import importlib.util
import urllib.error
import urllib.request

from omegaconf import DictConfig

from cifar_sweep.errors import UserError

# the logger options whose package is an extra of ours: option -> (module, extra)
EXTRAS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
HEALTH_S = 5  # an MLflow server answers /health in milliseconds once it is up


def check_trackers(cfg: DictConfig) -> None:
    """Raise a UserError naming the first logger or callback that cannot work."""
    for group in ("logger", "callbacks"):
        for key, node in (cfg.get(group) or {}).items():
            if node is not None and not (isinstance(node, DictConfig) and "_target_" in node):
                example = "loggers.CSVLogger" if group == "logger" else "callbacks.ModelSummary"
                raise UserError(
                    f"{group}.{key}: needs a _target_ (a Lightning class), e.g. "
                    f"+{group}.{key}._target_=lightning.pytorch.{example}"
                )
    loggers = cfg.get("logger") or {}
    for key, (module, extra) in EXTRAS.items():
        if loggers.get(key) is not None and not installed(module):
            raise UserError(
                f"logger={key} needs the {module} package: pip install -e '.[{extra}]' "
                f"(both trackers: '.[trackers]'; from a wheel: 'cifar_sweep[{extra}]')"
            )
    if loggers.get("mlflow") is not None:
        server_answers(loggers.mlflow.tracking_uri)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: as good as absent
        return False


def server_answers(uri: str) -> None:
    """An http(s) tracking URI has an MLflow server behind it (MlflowClient would retry for
    minutes before it said so); a sqlite:/// one is made when first used."""
    if uri.startswith("sqlite:///"):
        return
    if not uri.startswith(("http://", "https://")):
        raise UserError(
            f"logger.mlflow.tracking_uri={uri}: use sqlite:///<file> (the embedded store) or "
            "http(s)://host:port (an MLflow server)"
        )
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_S):
            pass
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise UserError(
            f"logger.mlflow.tracking_uri={uri}: no MLflow server answers there ({why}); start "
            "one (mlflow server --host ... --port ...), or leave the key out for the embedded "
            "store sqlite:///outputs/mlflow.db"
        ) from None
