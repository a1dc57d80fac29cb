"""User mistakes as one line naming the key, option or path: our own errors (UserError), and
Hydra's and OmegaConf's (an unknown option or key gets "did you mean"); HYDRA_FULL_ERROR=1 keeps
tracebacks.

Hydra prints its own errors over several lines (options, search path) and exits; with
HYDRA_FULL_ERROR=1, its documented switch, it raises them instead, so they reach `one_line_errors`.
"""

import difflib
import importlib
import logging
import os
import re
import signal
import sys
from contextlib import contextmanager
from typing import NoReturn

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    ValidationError,
)

from cifar_sweep.instantiate import TRUSTED

# HYDRA_FULL_ERROR as the user set it: the command line sets HYDRA_FULL_ERROR=1 itself so that
# Hydra's errors reach it, and passes the user's own value on to child processes in this one
USER_FULL_ERROR = "CIFAR_SWEEP_USER_FULL_ERROR"


class UserError(Exception):
    """A mistake in the user's config or data: reported as one line, never as a traceback."""


class SharedCauseError(UserError):
    """A failure that no swept value changes (a full disk, unreadable data): a sweep stops at
    the first one, and the point it hit is queued again for the rerun that follows the fix."""


def full_error_wanted() -> bool:
    """Whether the user asked for whole tracebacks with HYDRA_FULL_ERROR=1, as Hydra reads it."""
    return os.environ.get(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def did_you_mean(word: str, options) -> str:
    """'; did you mean X?' for the closest of `options`, or '' when none is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def exit_with(error: UserError, log: logging.Logger) -> NoReturn:
    """Log the error, print it as one line on stderr, and exit with status 1 (with
    HYDRA_FULL_ERROR=1, raise it, traceback and all)."""
    log.error("%s", error)
    if full_error_wanted():
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


_interrupted = False  # set by our SIGINT handler: tells Lightning's SystemExit(1) from an error's


def _on_sigint(signum, frame) -> NoReturn:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


@contextmanager
def interruptible(message: str, *, reraise: bool = False):
    """Ctrl-C: print `interrupted: <message>` and exit 130, as shells expect of SIGINT (or, with
    `reraise`, in a sweep's job, raise KeyboardInterrupt for the sweep loop to handle). Lightning
    catches the KeyboardInterrupt itself, cleans up and calls sys.exit(1): our handler's flag
    tells that exit from an error's. A SIGINT ignored at start (a background job) stays ignored."""
    global _interrupted
    installed = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if installed:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        if not (_interrupted or isinstance(e, KeyboardInterrupt)):
            raise
        if reraise:
            raise KeyboardInterrupt from None
        print(f"interrupted: {message}", file=sys.stderr)
        sys.exit(130)
    finally:
        _interrupted = False
        if installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def one_line_errors():
    """Around a Hydra command: a user's mistake exits 1 with one line on stderr, a bug raises."""
    os.environ.setdefault(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them
    try:
        yield
    except Exception as e:
        line = None if full_error_wanted() else one_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)


def one_line(e: Exception) -> str | None:
    """The error as one line, or None for an error that is not the user's (a bug: traceback)."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, MissingConfigException) and e.options is not None:
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        return (
            f"{group}={name}: no such option{did_you_mean(name, e.options)} "
            f"(options: {', '.join(e.options)})"
        )
    cause = e.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
        keys = [k for k in (cause.parent_node or {}) if k != "hydra" and not str(k).startswith("_")]
        hint = did_you_mean(cause.key, keys) or f"; +{cause.full_key}=... adds a new key"
        return f"{cause.full_key}: no such key{hint} (keys: {', '.join(map(str, keys))})"
    if isinstance(cause, ValidationError) and cause.full_key:
        return f"{cause.full_key}: {_first_line(cause)}"
    if isinstance(e, OverrideParseException):
        typed = re.search(r"string: (.*) out of \[", str(e))
        lines = str(e).splitlines()
        why = lines[1] if len(lines) > 1 else lines[0]
        return (
            f"{typed.group(1) if typed else 'override'}: cannot parse it ({why}); "
            "see https://hydra.cc/docs/advanced/override_grammar/basic/"
        )
    ambiguous = re.match(r"Ambiguous value for argument '(.*)'", str(e))
    if ambiguous:
        return (
            f"{ambiguous.group(1)}: several values; add -m to sweep over them, or write [a,b] "
            "for a list"
        )
    if isinstance(e, InstantiationException):
        return _instantiation(str(e))
    if isinstance(e, InterpolationResolutionError | ValidationError):
        key = getattr(e, "full_key", None)
        return f"{key}: {_first_line(e)}" if key else _first_line(e)
    if isinstance(e, ConfigCompositionException | HydraException) or _raised_by_hydra(e):
        text = str(e).replace("set env var HYDRA_FULL_ERROR=1 to see chained exception.", "")
        line = "; ".join(s.strip() for s in text.splitlines() if s.strip())
        return f"{line} ({_first_line(cause)})" if cause is not None else line
    return None


def _instantiation(text: str) -> str:
    """'<key>: Error locating target 'x.Y'; did you mean x.Z?' from Hydra's instantiate error."""
    key = re.search(r"full_key: (\S+)", text)
    target = re.search(r"target '([^']+)'", text, re.I)
    text = text.replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception.", "")
    lines = [s.strip() for s in text.splitlines() if s.strip() and not s.startswith("full_key")]
    if target and "execution whitelist" in text:  # Hydra's words tell a user to change code
        where = key.group(1) + ": " if key else ""
        return f"{where}{target.group(1)} is not built here: only {', '.join(TRUSTED)}"
    hint = ""
    if target and text.startswith("Error locating target"):
        module, _, name = target.group(1).rpartition(".")
        try:
            hint = did_you_mean(name, dir(importlib.import_module(module)))
        except ImportError:
            pass
    return f"{key.group(1) + ': ' if key else ''}{'; '.join(lines)}{hint}"


def _raised_by_hydra(e: Exception) -> bool:
    """A plain error raised in Hydra's own code: a misuse of its flags (--cfg with -m)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}hydra{os.sep}" in tb.tb_frame.f_code.co_filename


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
