"""Errors every part of tellm may raise for an operator to read."""


class CLIError(Exception):
    """An operator-facing error: printed as one line, exit code 2, no traceback."""
