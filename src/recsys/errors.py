"""User-facing errors: bad input or impossible configuration, reported as one clear line."""


class RecsysError(Exception):
    """Base class of errors caused by the user's data or configuration (not by a bug)."""


class ConfigError(RecsysError):
    """An impossible or inconsistent configuration; the message names the config key."""


class DataError(RecsysError):
    """Missing or malformed data; the message names the file (and line) and what was expected."""
