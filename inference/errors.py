"""Request errors of the inference service, free of gRPC so that validation stays pure logic.

The servicer turns each into the gRPC status named by ``code`` with ``str(error)`` as the message.
"""

from __future__ import annotations


class RequestError(Exception):
    code = "INTERNAL"


class InvalidArgument(RequestError):
    """A malformed request; the message starts with the offending field's name."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class FailedPrecondition(RequestError):
    """A well-formed request the server's state cannot serve (unknown topology, stale version)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(RequestError):
    """A request the server refuses for lack of room or rate (too large to keep, too frequent)."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(RequestError):
    code = "UNAVAILABLE"


class DeadlineExceeded(RequestError):
    code = "DEADLINE_EXCEEDED"
