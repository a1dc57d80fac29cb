"""Where the YAML configs are: conf/ beside the package in a checkout (editable installs too),
cifar_sweep/conf inside an installed wheel (pyproject.toml maps conf/ there)."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# absolute, so the command works from any folder
CONF = next(
    (d for d in (_PACKAGE / "conf", _PACKAGE.parent / "conf") if (d / "config.yaml").is_file()),
    _PACKAGE.parent / "conf",
)
