"""Errors that the CLI reports as one line (no traceback) with a non-zero exit.

Every message names the problem and, where there is one, the fix.
"""


class MtrlError(Exception):
    """Base class: anything raised as an MtrlError is a user-facing problem, not a bug."""


class ConfigError(MtrlError):
    """An invalid configuration value, key, profile or option."""


class ArtifactError(MtrlError):
    """An artifact is missing, unreadable, incomplete, of the wrong kind or of another schema version."""


class StageError(MtrlError):
    """A stage could not run (missing inputs) or one of its units failed."""


class NonFiniteError(MtrlError):
    """NaN or infinite values where a stage needs numbers: in data it reads, or in weights it trained."""


class DiskError(MtrlError):
    """A file could not be written: no space, a read-only file system, no permission (`mtrl.fsio`)."""
