"""The files one command reads and writes: no output over an input, no half-written results, OS errors as sentences.

Inside :func:`tracking_files` (what ``extremeseg`` wraps every command in; the Slicer logic may do the same),

- every file a reader opens (:func:`~.volumes.require_readable_file`, model files) is noted as an *input*, and a
  writer (:func:`~.volumes.write_atomically`) refuses to write over one of them, whatever ``overwrite`` says;
- every file written and every folder made (:func:`make_folder`) is noted, and when the command fails (any
  exception, a cancel included) they are removed again, newest first, so that a failed command leaves nothing
  half-done behind. Files it replaced under ``overwrite`` are removed too (their old content is already gone;
  keeping the new one next to the old others would mix two runs). A folder registered with
  :meth:`CommandFiles.keep` (a training run that can be resumed) keeps what lies in it.

Outside it nothing is tracked and the functions below only check and convert errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import shutil
from pathlib import Path

from ..errors import InputError

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("extremeseg_command_files", default=None)

#: errno -> what it means for the user, and what to do about it
_REASONS = {
    errno.ENOSPC: ("the disk is full", "free some space or choose another output folder"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose another output folder"),
    errno.EROFS: ("the file system is read-only", "choose an output folder on a writable disk"),
    errno.EACCES: ("permission denied", "choose an output folder you may write to"),
    errno.EPERM: ("the operation is not permitted (read-only or immutable file or folder)",
                  "choose an output folder you may write to"),
    errno.EISDIR: ("it is a folder", "give a file name"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EEXIST: ("it exists and is not a folder", "choose another output folder"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter name"),
}


def os_error(err: OSError, path, doing: str = "write") -> InputError:
    """An :class:`InputError` that says which ``path`` could not be written (or made) and why."""
    reason, hint = _REASONS.get(err.errno, (err.strerror or str(err), "check the path and the disk"))
    return InputError(f"cannot {doing} {path}: {reason}; {hint}")


def failed_write(err: BaseException, path) -> InputError | None:
    """The :class:`InputError` for an exception a file writer raised, or ``None`` if it is not about the disk.

    Python's own writers raise an ``OSError``; libraries may wrap it (it is then the exception's cause or
    context). torch's archive writer, given a file name, reports a short write as a bare ``RuntimeError``: that
    one counts as a full disk when the disk has (next to) no space left.
    """
    cause = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return os_error(cause, path)
    if isinstance(err, RuntimeError) and shutil.disk_usage(Path(path).parent).free < 2**20:
        return os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
    return None


class CommandFiles:
    """Inputs read and outputs written by one command (see the module docstring)."""

    def __init__(self):
        self.inputs: list = []
        self.written: list = []
        self.folders: list = []
        self._kept: list = []

    def keep(self, folder, when=None) -> None:
        """Keep what lies in ``folder`` if the command fails (``when()``, if given, decides at that moment)."""
        self._kept.append((Path(folder).resolve(), when))

    def _is_kept(self, path: Path) -> bool:
        return any(path.is_relative_to(folder) and (when is None or when()) for folder, when in self._kept)

    def remove_outputs(self) -> None:
        """Remove the files written and the folders made (if empty and not kept), newest first."""
        for path in reversed(self.written):
            if not self._is_kept(path):
                with contextlib.suppress(OSError):
                    path.unlink()
        for folder in reversed(self.folders):
            if not self._is_kept(folder):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: whatever else lies there is not ours


def current_files() -> CommandFiles | None:
    """The :class:`CommandFiles` of the command running now (``None`` outside :func:`tracking_files`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def tracking_files():
    """Track a command's files; remove its outputs again if it fails. Yields its :class:`CommandFiles`."""
    files = CommandFiles()
    token = _CURRENT.set(files)
    try:
        yield files
    except BaseException:
        files.remove_outputs()
        raise
    finally:
        _CURRENT.reset(token)


def note_input(path) -> None:
    """Note that the running command reads ``path`` (it may then not write over it)."""
    files = _CURRENT.get()
    if files is not None:
        files.inputs.append(Path(path).resolve())


def check_not_input(path) -> None:
    """:class:`InputError` if ``path`` is (the same file as) one of the running command's inputs."""
    files = _CURRENT.get()
    if files is None:
        return
    path = Path(path)
    for source in files.inputs:
        same = path.resolve() == source
        if not same and path.exists() and source.exists():
            same = os.path.samefile(path, source)
        if same:
            raise InputError(f"{path} is one of this command's inputs; refusing to write over it (whatever "
                             "--overwrite says): choose another output name")


def note_written(path) -> None:
    """Note that the running command wrote ``path``."""
    files = _CURRENT.get()
    if files is not None:
        files.written.append(Path(path).resolve())


def make_folder(path) -> Path:
    """Make folder ``path`` and its missing parents (noted as outputs); :class:`InputError` if it cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder; choose another output folder")
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, path, "make folder") from None
    files = _CURRENT.get()
    if files is not None:
        files.folders.extend(p.resolve() for p in reversed(missing))
    return path
