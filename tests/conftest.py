import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

# One CPU thread per process (the sweeps' own processes inherit it): the tiny models here gain
# nothing from a second, and on a busy 2-core machine two threads' spin-waits made a 1-epoch run
# 10x slower (11 s against 1.1 s, measured). A value already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the JPEG copy of CIFAR-10 as an archive, named as `make quickstart` takes it (CI sets it)
JPEG_ARCHIVE = Path(os.environ.get("CIFAR10_JPEG") or "cifar10-jpeg.tar.xz").absolute()
# A run small enough for 2 CPU cores: the generated set, a narrow ResNet-18, two epochs.
TINY = [
    "dataset=synthetic",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.progress_bar=false",
]
NARROW = "model.width=8"  # ResNet-18 only; below 8 channels oneDNN's 1x1 conv can hang (#6035)


def pytest_addoption(parser):
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the tests in reverse order: a test that passes only after another, or that "
        "leaves state behind for the next, fails",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(autouse=True)
def _trees_read_afresh():
    """A sweep run in this process holds its trees' listings (tree.hold()) for as long as the
    process lives: let go after each test, so the next sees its own trees' edits."""
    yield
    from cifar_sweep.data import tree

    tree.release()


def tiny(overrides) -> list[str]:
    """TINY, plus a narrow ResNet-18 unless the overrides pick a model or an experiment."""
    other_model = any(o.startswith(("model=", "+experiment=")) for o in overrides)
    return [*TINY, *([] if other_model else [NARROW]), *overrides]


def compose_cfg(*overrides: str, tmp_path: Path | None = None):
    """The real configs, composed as the command line would, then shrunk by TINY."""
    extra = [f"dataset.cache_dir={tmp_path / 'cache'}"] if tmp_path else []
    with initialize_config_dir(str(ROOT / "conf")):
        return compose("config", overrides=tiny([*extra, *overrides]))


def default_sigint() -> None:
    """In a child before it runs: SIGINT as a terminal's process has it. A background job of a
    non-interactive shell (pytest started with `&`) ignores SIGINT, its children too, and the
    program rightly leaves an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c_once_training(cmd: list[str], ready: Path) -> subprocess.CompletedProcess:
    """Run `cmd`, press Ctrl-C once `ready` (the logger's folder) shows training about to start,
    and return how it ended; stderr without blank lines. A new session with SIGINT as a terminal
    leaves it, so SIGINT reaches the process as Ctrl-C would."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, start_new_session=True, preexec_fn=default_sigint, **pipes
    )
    deadline = time.time() + 300
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    stderr = "\n".join(line for line in stderr.splitlines() if line.strip())
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def run_cli(*args: str, cwd: Path = ROOT, small: bool = True) -> subprocess.CompletedProcess:
    """python -m cifar_sweep with TINY overrides, as a user would type it."""
    cmd = [sys.executable, "-m", "cifar_sweep", *(tiny(args) if small else args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def noise_tree(root: Path, *, size: int, per_class: tuple[int, int]) -> Path:
    """train/ and test/ of 4 classes of size x size noise images, per_class (train, test) each."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / split / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def jpeg_subset(tmp_path_factory) -> Path:
    """20 train and 5 test images per class from the JPEG copy of CIFAR-10 (CIFAR10_JPEG)."""
    if not JPEG_ARCHIVE.is_file():
        pytest.skip(f"{JPEG_ARCHIVE} not found: set CIFAR10_JPEG to the JPEG copy's archive")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    keep = {("train", n) for n in range(20)} | {("test", n) for n in range(5)}
    with tarfile.open(JPEG_ARCHIVE) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and (parts[0], int(parts[-1][:4])) in keep:
                tar.extract(member, root, filter="data")
    return root


# Sweeps, each in its own sqlite study under tmp_path: in this process (the same Hydra entry as
# `python -m cifar_sweep -m`, without its 5-7 s of imports), but through the command line with
# workers, as a worker is the command line started again.


def sweep_overrides(tmp_path: Path, *args: str, storage: str | None = None) -> list[str]:
    """The sweep's overrides with a study, sweep folder and cache under tmp_path and no PNG plots
    (a test of the plots asks for them); `args` come last, so they can change any of these (Hydra
    keeps an override's last value)."""
    storage = storage or f"sqlite:///{tmp_path / 'studies.db'}"
    own = [
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
        "hydra.sweeper.plots=false",
    ]
    return tiny([*own, *args])


def sweep_cmd(tmp_path: Path, *args: str, storage: str | None = None) -> list[str]:
    """The sweep as a user types it: python -m cifar_sweep -m <overrides>."""
    overrides = sweep_overrides(tmp_path, *args, storage=storage)
    return [sys.executable, "-m", "cifar_sweep", "-m", *overrides]


def sweep(tmp_path: Path, *args: str, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a sweep; its exit status, what it printed and logged (stdout) and its errors."""
    workers = [a.split("=", 1)[1] for a in args if a.startswith("hydra.sweeper.workers=")]
    if workers[-1:] not in ([], ["1"]):
        result = subprocess.run(
            sweep_cmd(tmp_path, *args, **kw), cwd=ROOT, capture_output=True, text=True, timeout=600
        )
    else:
        result = sweep_in_process(sweep_overrides(tmp_path, *args, **kw))
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def sweep_in_process(overrides: list[str]) -> subprocess.CompletedProcess:
    """`python -m cifar_sweep -m <overrides>` in this process."""
    from cifar_sweep.__main__ import run

    return in_process(run, [*overrides, "hydra.mode=MULTIRUN"], multirun=True)  # as -m adds it


def in_process(command, overrides: list[str], *, multirun: bool = False):
    """A `@hydra.main` command (cifar_sweep's run, retrain's) in this process: the same configs,
    callbacks, sweeper, launcher and task function as on the command line, and the same one-line
    errors. Hydra's log lines and prints come back as stdout, the error line as stderr."""
    from hydra.core.global_hydra import GlobalHydra

    from cifar_sweep.errors import one_line_errors

    out, err = io.StringIO(), io.StringIO()
    root, env = logging.getLogger(), dict(os.environ)
    handlers, level = root.handlers[:], root.level
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), one_line_errors():
            with initialize_config_dir(str(ROOT / "conf"), job_name="cifar_sweep"):
                hydra = GlobalHydra.instance().hydra
                task = command.__wrapped__  # the function under its @hydra.main
                if multirun:
                    hydra.multirun(config_name="config", task_function=task, overrides=overrides)
                else:
                    job = hydra.run(config_name="config", task_function=task, overrides=overrides)
                    _ = job.return_value  # raises what the job raised, as Hydra's main does
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:  # Hydra configured logging for the command: give pytest its handlers back
        for handler in set(root.handlers) - set(handlers):
            handler.close()  # the job's log file
        root.handlers[:], root.level = handlers, level
        os.environ.clear()
        os.environ.update(env)
    return subprocess.CompletedProcess(overrides, code, out.getvalue(), err.getvalue())


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """run_cli's `python -m cifar_sweep` with TINY overrides, in this process."""
    from cifar_sweep.__main__ import run

    return in_process(run, tiny(args))


def study(tmp_path: Path, storage: str | None = None) -> optuna.Study:
    storage = storage or f"sqlite:///{tmp_path / 'studies.db'}"
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def states(s: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in s.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def distinct_params(trials: list) -> int:
    return len({tuple(sorted(t.params.items())) for t in trials})


def wait_for(tmp_path: Path, done: int, running: int = 1, timeout: float = 300) -> None:
    """Until the study holds `done` complete trials and `running` running ones."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            got = states(study(tmp_path))
        except (ValueError, KeyError, optuna.exceptions.StorageInternalError):
            continue
        if got.get("COMPLETE", 0) >= done and got.get("RUNNING", 0) == running:
            return
    raise AssertionError(f"the sweep never reached {running} running trial(s)")


class PostgresServer:
    """A throwaway PostgreSQL server (Debian's package) on a free port, which a test may stop,
    start and restart as a maintenance window or a failover would."""

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            pytest.skip("PostgreSQL server not installed (Debian package postgresql)")
        pytest.importorskip(
            "psycopg", reason="psycopg not installed (pip install -e '.[postgres]')"
        )
        self.bindir = bins[-1].parent
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.home = Path(tempfile.mkdtemp(prefix="cifar-sweep-pg-"))  # pytest's tmp is root's
        self.data, sock = self.home / "pgdata", self.home / "pgsock"
        sock.mkdir()
        if self.as_user:
            shutil.chown(self.home, "postgres")
            shutil.chown(sock, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
        server = ["-h", sock, "-p", str(port), "-U", "postgres"]
        auth = ["-A", "trust", "--auth-host=scram-sha-256", "-U", "postgres"]
        self._run(self.bindir / "initdb", "-D", self.data, *auth)
        self.start()
        self._run(self.bindir / "psql", *server, "-c", "CREATE USER sweep PASSWORD 'sweep-secret'")
        self._run(self.bindir / "createdb", *server, "-O", "sweep", "studies")
        self.url = f"postgresql://sweep:sweep-secret@127.0.0.1:{port}/studies"

    def _run(self, *cmd) -> None:
        result = subprocess.run(
            [*self.as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            pytest.skip(f"PostgreSQL: {Path(str(cmd[0])).name} failed: {result.stderr[:200]}")

    def pg_ctl(self, *args: str) -> None:
        log_file = self.home / "pg.log"
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-w", "-l", log_file, *args)

    def start(self) -> None:
        self.pg_ctl("-o", self.options, "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self.pg_ctl("-m", "fast", "-o", self.options, "restart")

    def close(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
             "stop"],
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def pg_server():
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres(pg_server) -> str:
    """The URL of a throwaway PostgreSQL database (password in it: tests only)."""
    return pg_server.url


class MlflowServer:
    """A real `mlflow server` (SQLite backend, artifacts in a temporary folder) on a free port
    of 127.0.0.1, as a lab runs one; about 10 s to answer on 2 cores."""

    def __init__(self):
        pytest.importorskip("mlflow", reason="mlflow not installed (pip install -e '.[mlflow]')")
        self.home = Path(tempfile.mkdtemp(prefix="cifar-sweep-mlflow-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.home / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.home / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        self.log = open(self.home / "server.log", "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        self.close()
        pytest.skip(f"mlflow server did not answer at {self.url} in 120 s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # stopping `mlflow` stops its uvicorn workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server():
    """The URL of a real MLflow tracking server: the one CI started (CIFAR_SWEEP_MLFLOW_URI),
    else one this test session starts and stops."""
    given = os.environ.get("CIFAR_SWEEP_MLFLOW_URI")
    if given:
        yield given
        return
    server = MlflowServer()
    try:
        yield server.url
    finally:
        server.close()


def mlflow_runs(url: str, experiment: str) -> dict:
    """The runs of `experiment` on the server, by name."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return {r.info.run_name: r for r in runs}


def steps(url: str, run, key: str) -> list[int]:
    """The epochs (steps) at which `key` was logged to `run`."""
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=url).get_metric_history(run.info.run_id, key)
    return sorted(m.step for m in history)


# Six fixed points on the tiny set whose curves cross: under ASHA with promotion (rungs at 1 and 2
# epochs) two of them pause at a rung, then earn their place once the others have reported.
PROMOTION_LRS = [0.05, 0.01, 1e-6, 2e-6, 3e-6, 4e-6]


def promotion_sweep(max_epochs: int) -> list[str]:
    """The overrides of a real sweep of PROMOTION_LRS with pruner=asha_promote."""
    points = ", ".join(f"{{optimizer.lr: {lr}}}" for lr in PROMOTION_LRS)
    return [
        "model=tiny_cnn",
        "model.channels=[8]",
        "model.hidden=16",
        "sweeper=random",
        "optimizer.lr=tag(log, interval(1e-6, 0.1))",
        f"hydra.sweeper.enqueue=[{points}]",
        "pruner=asha_promote",
        "hydra.sweeper.pruner.reduction_factor=2",
        f"hydra.sweeper.n_trials={len(PROMOTION_LRS)}",
        f"trainer.max_epochs={max_epochs}",
    ]


def sweep_killed_once(tmp_path: Path, *args: str, hook: str, epoch: str = "any") -> None:
    """Run the sweep `args` until its training process kills itself with SIGKILL (a crash:
    nothing told) at the Lightning hook `hook` of `epoch` (tests/kill_once.py), once."""
    [python, _, _, *multirun] = sweep_cmd(tmp_path, *args)  # python -m cifar_sweep -m ...
    killing = [python, "tests/kill_once.py", hook, epoch, str(tmp_path / "killed"), *multirun]
    killed = subprocess.run(killing, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]


def kill_once_a_trial_runs_with(tmp_path: Path, args, attr: str, what: str) -> None:
    """Start the sweep `args`, and kill -9 it (as a crash would: no trial told) once one of its
    running trials has the user attribute `attr` (a promotion's, a later PBT interval's)."""
    from optuna.trial import TrialState

    proc = subprocess.Popen(sweep_cmd(tmp_path, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None and time.time() < deadline, f"no {what} ran"
        time.sleep(0.1)
        try:
            s = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
            running = s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except (IndexError, KeyError, optuna.exceptions.StorageInternalError):
            continue
        if any(attr in t.user_attrs for t in running):
            break
    proc.kill()
    proc.wait()
