"""``POST /api/v1/oauth/token``: the OAuth2 client-credentials grant (RFC 6749 §4.4).

The request is form-encoded (``grant_type=client_credentials``, optional ``scope``); the
client authenticates with HTTP Basic (``client_id:client_secret``, each form-encoded as
§2.3.1 says) or with ``client_id`` and ``client_secret`` form fields, not both. Answers
and errors are plain JSON as §5.1 and §5.2 define them, not problem documents, so
off-the-shelf OAuth2 clients understand them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from flowfed.server import oauth
from flowfed.server.deps import db_of

router = APIRouter(tags=["oauth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(BaseModel):
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


class TokenError(BaseModel):
    """An error response (RFC 6749 §5.2)."""

    error: str
    error_description: str | None = None


class _Refusal(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _error(error: str, description: str) -> JSONResponse:
    status = 401 if error == "invalid_client" else 400
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="flowfed", charset="UTF-8"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _form(request: Request, body: bytes) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise _Refusal("invalid_request", "the request must be application/x-www-form-urlencoded")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise _Refusal("invalid_request", "the request body is not valid form data") from None
    repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
    if repeated:
        raise _Refusal("invalid_request", f"parameters given more than once: {', '.join(repeated)}")
    return {k: v[0] for k, v in parsed.items()}


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("authorization")
    in_form = "client_id" in form or "client_secret" in form
    if header is not None:
        if in_form:
            raise _Refusal(
                "invalid_request", "use HTTP Basic or the client_id/client_secret fields, not both"
            )
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise _Refusal("invalid_client", "client authentication failed")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _Refusal("invalid_client", "client authentication failed") from None
        cid, sep, secret = decoded.partition(":")
        if not sep:
            raise _Refusal("invalid_client", "client authentication failed")
        return unquote_plus(cid), unquote_plus(secret)
    if not in_form:
        raise _Refusal("invalid_client", "client authentication is required")
    return form.get("client_id", ""), form.get("client_secret", "")


_FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {
                            "type": "string",
                            "description": "Space-separated subset of the client's scopes "
                            "(default: all of them).",
                        },
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/api/v1/oauth/token",
    response_model=TokenResponse,
    responses={
        400: {"model": TokenError, "description": "invalid_request, invalid_scope, ..."},
        401: {"model": TokenError, "description": "invalid_client"},
    },
    openapi_extra=_FORM_BODY,
)
async def token(request: Request) -> JSONResponse:
    """Trade a node's or tool's client credentials for a short-lived access token.

    Form fields: ``grant_type=client_credentials``, optional ``scope``; the client id and
    secret by HTTP Basic or as ``client_id`` / ``client_secret`` fields.
    """
    try:
        form = _form(request, await request.body())
        client_id, secret = _credentials(request, form)
        grant = form.get("grant_type")
        if not grant:
            raise _Refusal("invalid_request", "grant_type is required")
        client = await asyncio.to_thread(
            oauth.authenticate_client, db_of(request), client_id, secret
        )
        if client is None:
            raise _Refusal("invalid_client", "client authentication failed")
        if grant != "client_credentials":
            raise _Refusal(
                "unsupported_grant_type", "this server supports grant_type=client_credentials"
            )
        asked = form.get("scope")
        scopes = client.scopes
        if asked is not None:
            wanted = tuple(dict.fromkeys(asked.split()))
            extra = [s for s in wanted if s not in client.scopes]
            if not wanted or extra:
                raise _Refusal(
                    "invalid_scope",
                    f"scope must be a subset of the client's scopes ({' '.join(client.scopes)})",
                )
            scopes = wanted
    except _Refusal as exc:
        return _error(exc.error, exc.description)
    settings = request.app.state.settings
    access, ttl = oauth.issue_token(
        request.app.state.signing_key, client, scopes, settings.token_ttl
    )
    body = TokenResponse(access_token=access, expires_in=ttl, scope=" ".join(scopes))
    return JSONResponse(body.model_dump(), headers=_NO_STORE)
