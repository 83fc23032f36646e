"""Our own exception classes.

Every error a *user* can cause (a bad file, a wrong folder, a misspelt algorithm) derives
from :class:`FedSegError`. The CLI prints ``str(error)`` as one line and exits with code 2;
the GUI shows it in a dialog. Anything else that escapes is a bug and keeps its traceback.
Messages name the file (or field) first and the problem second, so that one line is enough.
"""

from __future__ import annotations

from os import PathLike


class FedSegError(Exception):
    """Base class of all errors caused by input the user can fix."""


class ConfigError(FedSegError, ValueError):
    """A configuration value is missing, of the wrong type, or not one of the allowed values."""


class VolumeError(FedSegError):
    """A medical image (or label map) cannot be read, written, or is not usable.

    Parameters
    ----------
    path:
        The offending file or folder; it is put first in the message.
    problem:
        What is wrong with it, in a few words.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SiteError(FedSegError):
    """A site folder (MSD layout) is missing, malformed or unusable for training."""


class CheckpointError(FedSegError):
    """A run folder or model folder cannot be resumed or loaded."""


class FederationError(FedSegError):
    """A federation run cannot go on (too few sites replied, a site refused, ...)."""


class Interrupted(FedSegError):
    """The operator stopped the work in hand (a site leaving mid-message, a cancelled
    job). Not a failure: a site answers the message it was computing with this line."""
