"""Errors that mean "the user's input is wrong", as opposed to a bug.

The command line prints these as one line and exits with status 2; the Slicer
module shows them in a message box. Everything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user: wrong points, mismatched geometry, unreadable file..."""


class InputWarning(UserWarning):
    """Input that is probably not what the user meant (an image without contrast, a label map given as image)."""


class CancelledError(RuntimeError):
    """The user cancelled a long run; the last checkpoint is kept."""
