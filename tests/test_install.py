"""An installed wheel (not the checkout) works from any folder: configs, plugin and commands."""

import subprocess
import sys
import sysconfig
import zipfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import optuna
import pytest
from conftest import ROOT, tiny


def tracked(*patterns: str) -> list[str]:
    """The checkout's files that git tracks or would (not ignored ones: data, outputs, venv)."""
    files = ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns]
    return subprocess.run(files, cwd=ROOT, capture_output=True, text=True).stdout.split()


def test_every_module_and_config_is_declared_for_the_wheel():
    """The cheap half of the wheel test below: setuptools ships only the packages listed in
    pyproject.toml and the configs its globs match, so a new subpackage or a deeper config
    folder would be missing from an installed copy."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = tracked("cifar_sweep/*.py", "hydra_plugins/*.py")
    assert modules and {str(PurePosixPath(m).parent).replace("/", ".") for m in modules} <= set(
        config["packages"]
    )
    assert config["package-dir"] == {"cifar_sweep.conf": "conf"}
    globs = [PurePosixPath(g) for g in config["package-data"]["cifar_sweep.conf"]]
    for name in tracked("conf/*.yaml"):
        file = PurePosixPath(name).relative_to("conf")
        assert any(len(g.parts) == len(file.parts) and fnmatch(str(file), str(g)) for g in globs), (
            f"{name} is not in the wheel: add its folder's glob to package-data"
        )


@pytest.mark.slow  # builds and installs a wheel, then a sweep: the declarations above by default
def test_wheel_installed_elsewhere_composes_and_runs_a_sweep_from_another_folder(tmp_path: Path):
    # build from a copy of the tracked files, so the checkout gets no build/ folder
    src = tmp_path / "src"
    for name in filter(lambda f: (ROOT / f).is_file(), tracked()):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((ROOT / name).read_bytes())
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)]
    subprocess.run(build, check=True, capture_output=True)
    [wheel] = tmp_path.glob("cifar_sweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f for f in tracked("cifar_sweep/*.py", "hydra_plugins/*.py")} <= names
    assert {f"cifar_sweep/{f}" for f in tracked("conf/*.yaml")} <= names
    [entry_points] = [n for n in names if n.endswith("entry_points.txt")]
    declared = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "cifar_optuna = hydra_plugins.cifar_sweep_optuna.sweeper:CifarOptunaSweeper" in declared
    target = tmp_path / "site"
    install = [*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)

    # -S: no .pth files, so an editable install of a checkout in this venv stays out of sight
    env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-S", *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )

    where = run(
        "-c", "import cifar_sweep, hydra_plugins.cifar_sweep_optuna as p; print(p.__file__)"
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    bad = run("-m", "cifar_sweep", "optimizer.lr=0")
    assert bad.returncode == 1 and bad.stderr == "error: optimizer.lr=0 must be a number > 0\n"
    storage = f"sqlite:///{elsewhere / 'studies.db'}"
    one_trial = [
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.storage={storage}",
    ]
    sweep = run(str(target / "bin" / "cifar-sweep"), "-m", *tiny(one_trial))
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    [name] = optuna.get_all_study_names(storage)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 1
    [job] = (elsewhere / "outputs" / "multirun").glob("*/0")  # relative to the folder it ran in
    assert (job / "metrics.json").exists()
    # the configs came from the installed package
    assert f"path: {target}/cifar_sweep/conf\n" in (job / ".hydra" / "hydra.yaml").read_text()
