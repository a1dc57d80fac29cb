"""A full disk (ENOSPC, or a quota: EDQUOT) met anywhere in a run, as one line: the folder, the
space left on it, and where else to write. A SharedCauseError: no swept value changes a full
disk, so a sweep stops at the first instead of failing every point alike."""

import errno
import logging
import shutil
from pathlib import Path

from cifar_sweep.errors import SharedCauseError

FULL = (errno.ENOSPC, errno.EDQUOT)


def cause(error: BaseException) -> OSError | None:
    """The full-disk OSError behind `error`: itself, or one it was raised from or while handling
    (Lightning cleans up after a failed save, and the clean-up may fail on the same disk)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in FULL:
            return error
        seen.add(id(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def error(full: OSError, folder: Path, elsewhere: str) -> SharedCauseError:
    """'<folder>: no space left on device (0.1 MB free there); free some space, or write
    elsewhere: <elsewhere>', naming the folder of the file that failed where it lies outside
    `folder`. From here on logging's own failed writes print no tracebacks: the run's log file
    may lie on the same disk, and the one line must stay one."""
    logging.raiseExceptions = False
    written = full.filename2 or full.filename
    if isinstance(written, str) and folder.absolute() not in Path(written).absolute().parents:
        folder = Path(written).parent
    existing = next(p for p in [folder.absolute(), *folder.absolute().parents] if p.exists())
    free = shutil.disk_usage(existing).free / 2**20
    return SharedCauseError(
        f"{folder}: {full.strerror.lower()} ({free:.1f} MB free there); free some space, or "
        f"write elsewhere: {elsewhere}"
    )
