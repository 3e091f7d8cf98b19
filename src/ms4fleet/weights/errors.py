"""Errors of the weights package: one line each, naming what failed and what to do."""

from __future__ import annotations


class WeightsError(Exception):
    """A problem with fetching, verifying or staging weights; ``str(err)`` is one actionable line."""


class SourceError(WeightsError):
    """The source refused or does not have what was asked (access, repo, revision, file)."""


class IntegrityError(WeightsError):
    """Bytes arrived but do not match the size or sha256 the source promised."""


class DiskSpaceError(WeightsError):
    """Not enough free space for the files still to fetch."""
