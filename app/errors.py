"""The errors the app shows to the person using it, word for word (every other one is a bug)."""
from __future__ import annotations

from analysis import AnalysisError
from zoo import CheckpointError
from zoo.data import DataError


class InputError(ValueError):
    """A photo, face choice or model choice the app cannot use; the message says why and what to do."""


USER_ERRORS = (InputError, DataError, AnalysisError, CheckpointError)  # HubError is a CheckpointError
