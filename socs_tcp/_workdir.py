"""A work directory given on the command line, checked before anything is started."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ['WorkdirError', 'usable_workdir']


class WorkdirError(ValueError):
    """The directory cannot be made or written; the message says why in one line."""


def usable_workdir(path: str | None, option: str = '--workdir') -> Path | None:
    """Create ``path`` if needed and prove it writable; None stays None (a temporary one).

    Raises
    ------
    WorkdirError
        ``path`` is a file, lies under a file, or cannot be created or written.
    """
    if path is None:
        return None
    where = Path(path).expanduser()
    if where.exists() and not where.is_dir():
        raise WorkdirError(f'{option} {path}: not a directory')
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        raise WorkdirError(f'{option} {path}: {exc.strerror or exc}') from None
    return where.resolve()
