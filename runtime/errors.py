"""The exceptions feynmlp raises for anything a user can get wrong.

In: nothing. Out: `FeynmlpError` and its subclasses. Each message names the offending value
and what to do about it; the CLI prints it as one line and exits with status 2.
"""


class FeynmlpError(ValueError):
    """Base class of every error feynmlp raises on bad input."""


class UnsupportedActivationError(FeynmlpError):
    """An activation that is unknown, or has no derivatives of the order asked for."""


class ResourceLimitError(FeynmlpError, MemoryError):
    """A request whose result would not fit in memory; raised before anything is allocated."""


class StaleKernelError(FeynmlpError):
    """A generated kernel that does not match the generator that should have produced it."""


class ModelFileError(FeynmlpError):
    """A model file that cannot be read safely: wrong format, damaged, or inconsistent."""
