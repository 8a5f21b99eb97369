"""agentstack's errors as HTTP answers, all in the OpenAI error body vLLM's server uses.

This is the one place errors become HTTP: an `AgentstackError` (see `agentstack.errors`)
answers with its status; FastAPI's validation errors answer 400; Starlette's HTTP errors
(404 of an unknown path, 405 of a wrong method) keep their status and headers.
Anything else is logged with its traceback and answered as a bare 500: the client never
sees internals.

Body: {"error": {"message", "type", "param", "code"}} with `type` OpenAI's name for the
status and `code` the HTTP status. Authentication (401), limits (413, 429, 504) and role
permissions are answered by the routes' security dependencies (`agentstack.api.security`)
and body and time limits by `agentstack.api.limits`, in the same body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentstack.errors import AgentstackError

logger = logging.getLogger(__name__)

_STATUS_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    409: "ConflictError",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    503: "ServiceUnavailableError",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """The OpenAI error body, as documented in the OpenAPI schema."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": type_}
    for status, type_ in {**_STATUS_TYPES, 500: "InternalServerError", 504: "TimeoutError"}.items()
    if status not in (405, 415)
}
"""Every route may answer these (refusals of the security dependencies and the limits
included); documented so that clients and schema-driven tests know the error shape."""


REFUSALS = frozenset({401, 403, 429, 503})
"""Statuses counted in `agentstack:requests_refused_total` (by error code): the server
turned the caller away rather than failing on the request."""


def error_body(status: int, type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def status_type(status: int) -> str:
    """OpenAI's name for an HTTP status, as its SDKs read it."""
    return _STATUS_TYPES.get(status, "InternalServerError")


def error_response(status: int, type_: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, type_, message, param), status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if not loc:
        if first.get("type") == "value_error":
            return str(first.get("msg", "invalid request")).removeprefix("Value error, "), None
        return "request body must be a JSON object", None
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AgentstackError)
    async def _agentstack_error(request: Request, exc: AgentstackError) -> JSONResponse:
        if exc.status in REFUSALS:
            request.app.state.service.metrics.requests_refused.labels(exc.code).inc()
        return error_response(exc.status, status_type(exc.status), exc.message, exc.param,
                              headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return error_response(400, "BadRequestError", message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, status_type(exc.status_code), str(exc.detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(500, "InternalServerError", "internal server error")
