"""Errors that reach the user as one line: which file, what is wrong."""

from __future__ import annotations

from pathlib import Path


class GronvagError(Exception):
    """A user-facing error. ``str(err)`` is the one-line message the CLI prints (exit code 2)."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.message = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {self.message}" if self.path is not None else self.message)


class ScenarioError(GronvagError):
    """A scenario file is missing, unreadable, malformed or inconsistent."""


class SumoNotFoundError(GronvagError):
    """The SUMO binaries or tools cannot be located."""
