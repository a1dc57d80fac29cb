"""The one error type for user mistakes, and how a command reports it."""

import difflib
import logging
import os
import sys
from typing import NoReturn

# HYDRA_FULL_ERROR as the user set it: the command line sets HYDRA_FULL_ERROR=1 itself so that
# Hydra's errors reach it, and passes the user's own value on to child processes in this one
USER_FULL_ERROR = "CIFAR_SWEEP_USER_FULL_ERROR"


class UserError(Exception):
    """A mistake in the user's config or data: reported as one line, never as a traceback."""


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
