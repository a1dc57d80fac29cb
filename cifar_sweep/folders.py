"""Whether a folder can be made where a config puts it (a run folder, a cache), asked before the
work that would fill it."""

import os
import tempfile
from pathlib import Path


def unwritable(folder: Path) -> Path | None:
    """The first existing ancestor of `folder` if the folder cannot be created under it. Tried
    with a folder made and removed at once: os.access says yes to root even where the kernel
    refuses (/proc, a read-only mount)."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                return parent
            try:
                os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".write-test-"))
            except OSError:
                return parent
            return None
    return None
