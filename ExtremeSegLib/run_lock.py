"""An exclusive lock on a training run folder, so that a second ``train`` (or ``train --resume``) on a folder
whose run is still going is refused instead of both writing the same checkpoints.

The lock is an OS lock on the file ``<folder>/.extremeseg-run.lock`` (``fcntl.flock`` on POSIX, ``msvcrt.locking``
on Windows): the OS releases it when the process ends, however it ends, so a killed run never leaves a stale lock.
The file itself may stay (a run folder's reader ignores it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import InputError
from .io.outputs import make_folder, note_written, os_error

LOCK_NAME = ".extremeseg-run.lock"


class RunLock:
    """The lock on a run folder: :meth:`acquire` takes it (making the folder if needed), leaving the ``with``
    block releases it. ``with RunLock(folder) as lock: ... lock.acquire() ...`` lets a job check everything
    first and touch the folder only when it starts. :class:`InputError` if another process holds it."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._file = None

    def __enter__(self) -> "RunLock":
        return self

    def acquire(self) -> None:
        path = make_folder(self.folder) / LOCK_NAME
        created = not path.exists()
        try:
            self._file = open(path, "a+")  # held open for the lock's lifetime
        except OSError as err:
            raise os_error(err, path) from None
        if created:
            note_written(path)  # a failed start removes it with the folder it made
        try:
            _lock(self._file)
        except OSError:
            self._file.close()
            self._file = None
            raise InputError(f"a run is in progress in {self.folder} (another extremeseg train holds its lock); wait "
                             f"for it to finish, or cancel it (create {self.folder / 'CANCEL'}) and then resume it "
                             "with --resume") from None

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            _unlock(self._file)
            self._file.close()
            self._file = None


if sys.platform == "win32":
    import msvcrt

    def _lock(file) -> None:
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # raises OSError when another process holds it

    def _unlock(file) -> None:
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(file) -> None:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError (an OSError) when held

    def _unlock(file) -> None:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)

