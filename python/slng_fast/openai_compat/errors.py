"""Errors as OpenAI's API reports them: ``{"error": {"message", "type", "param",
"code"}}`` with the HTTP status its clients (the official SDKs) map to an exception
class. A unified error event of a session maps to one of these by its code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from slng_fast import errors


def error_object(message: str, type: str, code: str | None,
                 param: str | None = None) -> dict[str, Any]:
    """OpenAI's ``error`` object, one shape for the HTTP body and the Realtime event."""
    return {"message": message, "type": type, "param": param, "code": code}


@dataclass(frozen=True)
class ApiError(Exception):
    """One refusal: the status, OpenAI's ``type`` and ``code``, and the parameter at
    fault where there is one. ``retry_after_s``: the Retry-After header (429, 503)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = None

    def body(self) -> bytes:
        return orjson.dumps({"error": error_object(self.message, self.type, self.code,
                                                   self.param)})

    def headers(self) -> list[tuple[str, str]]:
        if self.retry_after_s is None:
            return []
        return [("retry-after", str(max(1, math.ceil(self.retry_after_s))))]


def bad_request(message: str, param: str | None = None,
                code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def model_not_found(model: str, kind: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or is not a {kind} model "
                    "of this gateway; GET /v1/models lists them", code="model_not_found",
                    param="model")


def rate_limited(message: str, retry_after_s: float, code: str = "rate_limit_exceeded"
                 ) -> ApiError:
    return ApiError(429, message, type="requests", code=code, retry_after_s=retry_after_s)


def unavailable(message: str, code: str = "provider_unavailable") -> ApiError:
    return ApiError(503, message, type="server_error", code=code, retry_after_s=1)


# Unified error codes (PROTOCOL.md section 7) to statuses.
_STATUS = {
    errors.AUTH_FAILED.code: 401,
    errors.TOO_MANY_CONNECTIONS.code: 429,
    errors.RATE_LIMITED.code: 429,
    errors.MESSAGE_TOO_LARGE.code: 413,
    errors.TEXT_TOO_LONG.code: 400,
    errors.INVALID_MESSAGE.code: 400,
    errors.UNKNOWN_COMMAND.code: 400,
    errors.ALREADY_INITIALIZED.code: 400,
    errors.MIXED_PROTOCOL.code: 400,
    errors.INVALID_PARAMETER.code: 400,
    errors.PROVIDER_UNAVAILABLE.code: 503,
    errors.PROVIDER_ERROR.code: 502,
    errors.INTERNAL_ERROR.code: 500,
}


def from_event(event: dict[str, Any]) -> ApiError:
    """The HTTP refusal for a session's unified ``error`` event."""
    code = str(event.get("code") or errors.INTERNAL_ERROR.code)
    message = str(event.get("message") or code)
    status = _STATUS.get(code, 500)
    if status == 401:
        return unauthorized(message)
    if status == 429:
        wait = event.get("retry_after_ms")
        seconds = wait / 1000 if isinstance(wait, (int, float)) else 1.0
        return rate_limited(message, seconds, code)
    if status == 503:
        return unavailable(message, code)
    if status >= 500:
        return ApiError(status, message, type="server_error", code=code)
    return ApiError(status, message, code=code)
