"""Where the YAML configs are: conf/ beside the package in a checkout (editable installs too),
cifar_sweep/conf inside an installed wheel (pyproject.toml maps conf/ there)."""

from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE = Path(__file__).resolve().parent
# absolute, so the command works from any folder
CONF = next(
    (d for d in (_PACKAGE / "conf", _PACKAGE.parent / "conf") if (d / "config.yaml").is_file()),
    _PACKAGE.parent / "conf",
)

# ${or:a,b}: a unless it is null, else b (oc.select returns a null value as it is). The default
# run folder is `resume` when one is given, so a resumed run goes on in its own folder.
OmegaConf.register_resolver(
    "or", lambda first, second: second if first is None else first, replace=True
)
