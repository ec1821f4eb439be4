"""The "Find a customer" page's request handling: its CSRF token and reading the posted form.

The looked-up value (an e-mail address, a phone number) is personal data. It arrives only as
the body of a POST (``application/x-www-form-urlencoded``, read here with a size limit, never
through FastAPI's form validation, whose errors would echo the input) and leaves this process
only as a bound parameter of the business database's query (``retention.identity``). No error
raised here repeats it.

CSRF: a per-session random nonce in an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to the
app, and in the form's hidden field an HMAC of the user's id keyed with that nonce. A POST is
accepted only if the field equals the HMAC of the cookie's nonce for the user the request
authenticates as, so a page of another site (which can neither read the cookie nor send it
with a cross-site POST) cannot submit the form, and a token shown to one user is not valid
for another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

CSRF_COOKIE = "retention_csrf"
CSRF_FIELD = "csrf_token"
FIELDS = frozenset({CSRF_FIELD, "identity", "value"})
"""The only fields the form has; anything else is refused."""
MAX_BODY = 8192
"""Bytes a posted form may have (an identity value is at most 1,000 characters)."""
FORM_TYPE = "application/x-www-form-urlencoded"

_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")
"""``secrets.token_urlsafe(32)``: 32 random bytes in 43 characters."""


class BadForm(Exception):
    """The posted form cannot be read; ``reason`` says why in words that never repeat a field's value."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _user_id(user: Any) -> str:
    return str(user.get_id())


def session_nonce(request: Request) -> tuple[str, bool]:
    """The request's CSRF nonce (its cookie) and False, or a new one and True (set it with ``set_nonce``)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if _NONCE.fullmatch(current):
        return current, False
    return secrets.token_urlsafe(32), True


def form_token(nonce: str, user: Any) -> str:
    """The hidden field's value for ``user`` in the session of ``nonce``."""
    message = f"retention find-a-customer:{_user_id(user)}".encode()
    return hmac.new(nonce.encode(), message, hashlib.sha256).hexdigest()


def set_nonce(request: Request, response: Response, nonce: str) -> None:
    """Send the nonce as a session cookie that only this app receives, never to scripts or other sites."""
    path = str(request.scope.get("root_path", "")).rstrip("/") or "/"
    response.set_cookie(
        CSRF_COOKIE,
        nonce,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.base_url.scheme == "https",
    )


def check_token(request: Request, form: dict[str, str], user: Any) -> bool:
    """Whether the posted token is the one this session's nonce gives for this user."""
    nonce = request.cookies.get(CSRF_COOKIE, "")
    posted = form.get(CSRF_FIELD, "")
    if not _NONCE.fullmatch(nonce) or not posted:
        return False
    return hmac.compare_digest(posted.encode(), form_token(nonce, user).encode())


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields (each at most once, only the form's own); BadForm otherwise."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        raise BadForm(415, "The form must be sent as application/x-www-form-urlencoded.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BadForm(413, "The form is too large.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadForm(413, "The form is too large.")
    try:
        fields = parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=len(FIELDS),
        )
    except (UnicodeDecodeError, ValueError):  # the messages may quote the body: not passed on
        raise BadForm(400, "The form cannot be read.") from None
    if not set(fields) <= FIELDS or any(len(values) != 1 for values in fields.values()):
        raise BadForm(400, "The form has unexpected fields.")
    return {name: values[0] for name, values in fields.items()}
