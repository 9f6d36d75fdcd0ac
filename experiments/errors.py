"""Errors the user can fix. The runner prints them as one line (no traceback) and records no FINISHED run."""


class UserError(ValueError):
    """Bad configuration or bad input data; the message names the key or file and the fix."""


class ConfigError(UserError):
    """An impossible or inconsistent configuration value."""


class DataError(UserError):
    """Bad input data."""
