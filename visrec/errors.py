"""The error the command line turns into a one-line message (no stack trace)."""


class VisrecError(Exception):
    """Something the user can fix: a bad argument, a missing input, an unreachable store."""
