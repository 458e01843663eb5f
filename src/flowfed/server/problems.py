"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

Routes raise :class:`ProblemError`; the handlers installed by :func:`install_handlers`
also turn Starlette's HTTP errors, request validation errors and unexpected exceptions
into problems, so a client never sees an HTML page or a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowfed.db import AmbiguousRef
from flowfed.spec.diagnostics import Diagnostic, FlowError
from flowfed.spec.limits import InputLimitError
from flowfed.wording import plural

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger("flowfed.server")

#: FastAPI's detail when a JSON request body cannot be decoded (e.g. it is not UTF-8).
_BODY_PARSE_ERROR = "There was an error parsing the body"


class ProblemItem(BaseModel):
    """One located error inside a problem (a request field or a flow diagnostic)."""

    model_config = ConfigDict(extra="allow")

    message: str
    loc: list[str | int] | None = None
    type: str | None = None
    file: str | None = None
    line: int | None = None
    step: str | None = None
    field: str | None = None
    hint: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem details document."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemItem] | None = None


class ProblemError(Exception):
    """An error a route reports to the client as a problem document.

    ``kind`` becomes the problem ``type`` (``urn:flowfed:problem:<kind>``); without it
    the type is ``about:blank`` and the title is the status phrase, as RFC 9457 advises.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        errors: Iterable[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def diagnostics_items(diagnostics: Iterable[Diagnostic]) -> list[dict[str, Any]]:
    """Flow diagnostics as problem ``errors`` (message, file, line, step, field, hint)."""
    return [d.to_dict() for d in diagnostics]


def problem_response(
    request: Request | None,
    status: int,
    detail: str | None,
    *,
    kind: str | None = None,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A ``application/problem+json`` response."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "type": f"urn:flowfed:problem:{kind}" if kind else "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path if request is not None else None,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def _validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    items = []
    for err in exc.errors():
        loc = [x if isinstance(x, int) else str(x) for x in err.get("loc", ())]
        item: dict[str, Any] = {
            "loc": loc,
            "message": err.get("msg", "invalid"),
            "type": err.get("type"),
        }
        # The field is the location inside the body/query (without the "body" prefix).
        where = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
        if where:
            item["field"] = ".".join(str(x) for x in where)
        items.append(item)
    return items


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            request,
            exc.status,
            exc.detail,
            kind=exc.kind,
            title=exc.title,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 400 and detail == _BODY_PARSE_ERROR:
            # FastAPI's answer to a JSON body that is not UTF-8 text: the same problem as
            # any other body that is not JSON.
            return problem_response(
                request, 400, "the request body is not valid JSON", kind="malformed-json"
            )
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint at {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return problem_response(request, exc.status_code, detail, headers=exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        items = _validation_items(exc)
        if any(i.get("type") == "json_invalid" for i in items):
            # Not JSON at all: a syntax problem (400), not a semantic one (422).
            return problem_response(
                request,
                400,
                "the request body is not valid JSON",
                kind="malformed-json",
                errors=items,
            )
        n = len(items)
        return problem_response(
            request,
            422,
            f"the request has {plural(n, 'invalid field')}",
            kind="validation-error",
            errors=items,
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback on the server; the client gets one line, never a trace.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request, 500, f"internal server error ({type(exc).__name__})", kind="internal"
        )

    async def on_flow_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FlowError)
        if isinstance(exc, InputLimitError):
            # A limit, not a mistake in the flow: 413 for size, 422 for the others,
            # with the problem naming the limit crossed.
            return problem_response(
                request,
                exc.status,
                str(exc.diagnostics[0]),
                kind="input-too-large" if exc.status == 413 else "input-limit",
                title="Input over a limit",
                errors=diagnostics_items(exc.diagnostics),
                extra={"limit": exc.limit},
            )
        n = len(exc.diagnostics)
        return problem_response(
            request,
            422,
            f"the flow has {plural(n, 'problem')}",
            kind="invalid-flow",
            title="Invalid flow",
            errors=diagnostics_items(exc.diagnostics),
        )

    async def on_recursion(request: Request, exc: Exception) -> JSONResponse:
        # The last line of defence behind the input limits: whatever nested too deep for
        # the interpreter came from the request, so it is the request's problem.
        log.warning("input nested too deeply on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            422,
            "the input is nested too deeply to process",
            kind="input-limit",
            title="Input over a limit",
            extra={"limit": "depth"},
        )

    async def on_ambiguous(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, 400, str(exc), kind="ambiguous-reference")

    app.add_exception_handler(FlowError, on_flow_error)
    app.add_exception_handler(AmbiguousRef, on_ambiguous)
    app.add_exception_handler(RecursionError, on_recursion)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
