"""Errors a user can act on: the CLI prints them as one line with no traceback."""


class BabylonError(RuntimeError):
    """A failure whose message says what went wrong and what to do next."""

    exit_code: int = 1


class ConfigurationError(BabylonError):
    """Missing or contradictory configuration."""

    exit_code = 2
