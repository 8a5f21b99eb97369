"""Errors the API returns, all in the OpenAI error body that vLLM's server uses.

    APIError                      base: status + OpenAI `type`
     ├── InvalidRequest           400 BadRequestError (bad values, unusable input)
     ├── Forbidden                403 PermissionDeniedError (the API key may not use this graph)
     ├── NotFound                 404 NotFoundError (unknown role/model/adapter/assistant/thread/run,
     │                                or a thread of another API key)
     ├── Conflict                 409 ConflictError (a thread busy with another run)
     ├── PayloadTooLarge          413 RequestEntityTooLarge
     ├── UnprocessableEntity      422 UnprocessableEntityError (run input that does not fit the graph)
     └── ServiceUnavailable       503 ServiceUnavailableError (engine not ready / dead)

Body: {"error": {"message", "type", "param", "code"}} with `code` the HTTP status.
Authentication (401), limits (413, 429, 504) and role permissions are answered before
any route by the request guard (`agentstack.api.guard`), in the same body.
Anything not an APIError is logged with its traceback and answered as a bare 500:
the client never sees internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class APIError(Exception):
    status: int = 500
    type: str = "InternalServerError"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(APIError):
    status = 400
    type = "BadRequestError"


class Forbidden(APIError):
    status = 403
    type = "PermissionDeniedError"


class NotFound(APIError):
    status = 404
    type = "NotFoundError"


class Conflict(APIError):
    status = 409
    type = "ConflictError"


class UnprocessableEntity(APIError):
    status = 422
    type = "UnprocessableEntityError"


class PayloadTooLarge(APIError):
    status = 413
    type = "RequestEntityTooLarge"


class ServiceUnavailable(APIError):
    status = 503
    type = "ServiceUnavailableError"


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
    for status, type_ in {**_STATUS_TYPES, 500: "InternalServerError", 503: "ServiceUnavailableError",
                          504: "TimeoutError"}.items()
    if status not in (405, 415)
}
"""Every route may answer these (the guard's refusals included); documented so that
clients and schema-driven tests know the error shape."""


def error_body(status: int, type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def error_response(status: int, type_: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, type_, message, param), status_code=status)


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
        return "request body must be a JSON object", None
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return error_response(400, "BadRequestError", message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "InternalServerError")
        return error_response(exc.status_code, type_, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(500, "InternalServerError", "internal server error")
