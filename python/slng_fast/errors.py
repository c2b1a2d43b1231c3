"""Every error the gateway can report, each knowing its unified code, whether the
client may retry, and the close code that follows it (None: the session goes on).
The table is PROTOCOL.md section 7."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorKind:
    code: str
    retryable: bool
    close_code: int | None


AUTH_FAILED = ErrorKind("auth_failed", False, 4000)
TOO_MANY_CONNECTIONS = ErrorKind("too_many_connections", True, 4001)
RATE_LIMITED = ErrorKind("rate_limited", True, None)
MESSAGE_TOO_LARGE = ErrorKind("message_too_large", False, 4002)
TEXT_TOO_LONG = ErrorKind("text_too_long", False, None)
INVALID_MESSAGE = ErrorKind("invalid_message", False, None)
UNKNOWN_COMMAND = ErrorKind("unknown_command", False, None)
ALREADY_INITIALIZED = ErrorKind("already_initialized", False, None)
MIXED_PROTOCOL = ErrorKind("mixed_protocol", False, None)
INVALID_PARAMETER = ErrorKind("invalid_parameter", False, None)
PROVIDER_UNAVAILABLE = ErrorKind("provider_unavailable", True, 1013)
PROVIDER_ERROR = ErrorKind("provider_error", False, 1011)
INTERNAL_ERROR = ErrorKind("internal_error", True, 1011)

KINDS = {k.code: k for k in (
    AUTH_FAILED, TOO_MANY_CONNECTIONS, RATE_LIMITED, MESSAGE_TOO_LARGE, TEXT_TOO_LONG,
    INVALID_MESSAGE, UNKNOWN_COMMAND, ALREADY_INITIALIZED, MIXED_PROTOCOL, INVALID_PARAMETER,
    PROVIDER_UNAVAILABLE, PROVIDER_ERROR, INTERNAL_ERROR,
)}

# Close codes of PROTOCOL.md section 7.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_AUTH_FAILED = 4000
CLOSE_RATE_LIMITED = 4001
CLOSE_MESSAGE_TOO_LARGE = 4002


@dataclass(frozen=True)
class GatewayError(Exception):
    """An error to report to the client as a unified ``error`` event."""

    kind: ErrorKind
    message: str
    retry_after_ms: int | None = None
    # A provider error may override retryable/close code with what the upstream said.
    retryable: bool | None = None
    close_code: int | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.kind.code}: {self.message}"

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def is_retryable(self) -> bool:
        return self.kind.retryable if self.retryable is None else self.retryable

    @property
    def fatal_close_code(self) -> int | None:
        return self.close_code if self.close_code is not None else self.kind.close_code

    def event_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "code": self.kind.code,
            "message": self.message,
            "retryable": self.is_retryable,
        }
        if self.retry_after_ms is not None:
            fields["retry_after_ms"] = self.retry_after_ms
        return fields
