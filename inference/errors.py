"""Errors a user can cause. The CLI turns each into one line that names the file and the problem."""

from __future__ import annotations


class OrdnanceError(Exception):
    """Base class of errors caused by input, configuration or environment, not by a bug."""

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(OrdnanceError):
    """An input file is missing, unreadable or not what it should be."""


class ModelError(OrdnanceError):
    """A model file is missing, corrupt, or lacks a valid model card."""


class OutputError(OrdnanceError):
    """An output location cannot be written."""
