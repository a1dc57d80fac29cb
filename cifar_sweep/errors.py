"""The one error type for user mistakes, and how a command reports it."""

import logging
import sys
from typing import NoReturn


class UserError(Exception):
    """A mistake in the user's config or data: reported as one line, never as a traceback."""


def exit_with(error: UserError, log: logging.Logger) -> NoReturn:
    """Log the error, print it as one line on stderr, and exit with status 1."""
    log.error("%s", error)
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
