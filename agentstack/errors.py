"""The errors agentstack raises to its callers, each with a stable code.

Every layer (the chat core, the service, workflows) raises these; the HTTP API maps
them to a status and the OpenAI error body in one place (`agentstack.api.errors`), and
in-process callers (graph nodes through `RoleChatModel`) catch the same types.

    AgentstackError                      code                 HTTP
     ├── InvalidRequest                  invalid_request      400  bad values, unusable input
     ├── Unauthenticated                 unauthenticated      401  no API key, or a wrong one
     ├── Forbidden                       forbidden            403  the API key may not use this
     ├── NotFound                        not_found            404  unknown model/adapter/thread/run
     ├── Conflict                        conflict             409  clashes with the current state
     ├── UnprocessableEntity             unprocessable        422  input that does not fit a graph
     ├── RateLimited                     rate_limited         429  the key's queue is full
     └── ServiceUnavailable              unavailable          503  a dependency is down, or draining

Errors of configuration found at start (roles file, gate file, keys file, engine
platform) are `ValueError`s of their own modules: they stop the server, not a request.
"""

from __future__ import annotations

from typing import ClassVar


class AgentstackError(Exception):
    """Base of request errors: `message` for people, `code` for programs, `param` names
    the request field at fault (as in the OpenAI error body)."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    default_param: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param if param is not None else self.default_param
        self.headers = headers or {}
        """HTTP headers the answer carries (`Retry-After`, `WWW-Authenticate`)."""


class InvalidRequest(AgentstackError):
    code = "invalid_request"
    status = 400


class Unauthenticated(AgentstackError):
    code = "unauthenticated"
    status = 401


class Forbidden(AgentstackError):
    code = "forbidden"
    status = 403


class NotFound(AgentstackError):
    code = "not_found"
    status = 404


class Conflict(AgentstackError):
    code = "conflict"
    status = 409


class UnprocessableEntity(AgentstackError):
    code = "unprocessable"
    status = 422


class RateLimited(AgentstackError):
    code = "rate_limited"
    status = 429


class ServiceUnavailable(AgentstackError):
    code = "unavailable"
    status = 503
