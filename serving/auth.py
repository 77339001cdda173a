"""Bearer-token checks for the protected routes: admin (consent, erasure, stock, and the operations
pages: `/ops`, `/ops/lift`, Data Docs, the API docs), marketing (audiences) and metrics (`/metrics`, which
the admin token opens too). Tokens come from settings (`CAROUSEL_ADMIN_TOKEN`,
`CAROUSEL_MARKETING_TOKEN`), have no defaults, and the app refuses to start without them outside the
demo (`check_tokens_configured`).

Comparison is constant-time (`secrets.compare_digest`) so response timing does not leak a token's
prefix, and a client address that presents more than `auth_failures_per_minute` wrong tokens is locked
out for a minute (`LockedOut`, 429): every token it presents is refused meanwhile, the right one too
(`serving.ratelimit.FailedCredentials`). Routers are mounted with these as dependencies:
`APIRouter(dependencies=[AdminDep])`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.datastructures import State

from carousel.rules.identity import verified_shopper
from configs.settings import Settings
from serving.deps import get_app_settings
from serving.metrics import AUTH_REFUSED
from serving.ratelimit import FailedCredentials
from serving.responses import error_response

_bearer = HTTPBearer(auto_error=False, description="the admin or marketing token")


class MissingTokens(RuntimeError):
    """A protected route's token is not configured and this is not the demo."""


def check_tokens_configured(settings: Settings) -> None:
    """Refuse to serve without the admin, marketing and storefront tokens (except in the demo, which
    generates its own)."""
    missing = [
        f"CAROUSEL_{name.upper()}"
        for name in ("admin_token", "marketing_token", "storefront_token")
        if getattr(settings, name) is None
    ]
    if settings.erasure_salt is None:
        missing.append("CAROUSEL_ERASURE_SALT")
    if missing and not settings.demo:
        raise MissingTokens(
            f"{', '.join(missing)} not set: the protected routes would be open. "
            "Set them (16+ characters) or run the demo (CAROUSEL_DEMO=true)."
        )


def _matches(credentials: HTTPAuthorizationCredentials | None, token: SecretStr | None) -> bool:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return False
    return _same(credentials.credentials, token)


def _same(given: str, token: SecretStr | None) -> bool:
    """`given` is the configured `token`, compared in constant time (never true for an unset one)."""
    return token is not None and secrets.compare_digest(given.encode(), token.get_secret_value().encode())


def _bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header ("" for any other header)."""
    scheme, _, token = (authorization or "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def _unauthorized(role: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail=f"a valid {role} bearer token is required",
        headers={"WWW-Authenticate": "Bearer"},
    )


class LockedOut(HTTPException):
    """A 429: the client's address presented too many wrong tokens and none of its tokens is judged now."""

    def __init__(self, wait_s: int) -> None:
        super().__init__(
            status_code=429,
            detail=f"too many wrong tokens from this address: every token is refused for the next {wait_s}s",
            headers={"Retry-After": str(wait_s)},
        )
        self.wait_s = wait_s

    def response(self) -> Response:
        """The 429 for a route answered outside FastAPI's exception handlers."""
        response = error_response(self.status_code, str(self.detail))
        response.headers.update(self.headers or {})
        return response


async def judge(state: State, address: str | None, token: str, *, valid: bool) -> None:
    """Let a request's bearer `token` be believed (`valid`) or refused with the route's 401; raise
    `LockedOut` instead while `address` is locked out, or when this wrong token puts it over the limit.
    No token ("") guessed nothing, and another role's token (the storefront's sent to an admin route) is
    a caller's mistake, not a guess: neither is counted."""
    if not token:
        return
    guard: FailedCredentials | None = getattr(state, "failed_credentials", None)
    wait_s = guard.locked(address) if guard is not None else None
    if wait_s is None and not valid:
        if guard is not None and not _configured(state.settings, token):
            wait_s = await guard.failed(address)
        if wait_s is None:
            AUTH_REFUSED.labels(reason="wrong_token").inc()
            return
    if wait_s is not None:
        AUTH_REFUSED.labels(reason="locked_out").inc()
        raise LockedOut(wait_s)


def _configured(settings: Settings, token: str) -> bool:
    """Whether `token` is any of the configured bearer tokens."""
    return any(
        _same(token, getattr(settings, name))
        for name in ("admin_token", "marketing_token", "metrics_token", "storefront_token")
    )


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _checked(
    request: Request, credentials: HTTPAuthorizationCredentials | None, *tokens: SecretStr | None
) -> bool:
    """Whether the bearer credentials are one of `tokens` (`judge`d: raises `LockedOut`)."""
    valid = any(_matches(credentials, token) for token in tokens)
    given = credentials.credentials if credentials is not None else ""
    await judge(request.app.state, _address(request), given, valid=valid)
    return valid


async def require_admin(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if not await _checked(request, credentials, settings.admin_token):
        raise _unauthorized("admin")


async def require_marketing(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    # The admin token opens the marketing routes too: operators can inspect audiences.
    if not await _checked(request, credentials, settings.marketing_token, settings.admin_token):
        raise _unauthorized("marketing")


# The operations pages are opened in a browser, which cannot send a bearer token: `POST /ops/login` with
# the admin token sets this cookie, whose value only the admin token's holder can compute.
OPS_COOKIE = "carousel_ops"


def ops_cookie_value(settings: Settings) -> str | None:
    """HMAC of a fixed message under the admin token (None without one): changing the token logs every
    browser out."""
    if settings.admin_token is None:
        return None
    key = settings.admin_token.get_secret_value().encode()
    return hmac.new(key, b"carousel ops session", hashlib.sha256).hexdigest()


async def is_operator(
    state: State, address: str | None, authorization: str | None, cookie: str | None
) -> bool:
    """Whether a request may see the operations pages: the ops cookie, or the admin bearer token
    (`judge`d: raises `LockedOut`). The cookie is an HMAC nobody guesses: it is not counted, and opens
    the pages during a lockout."""
    settings: Settings = state.settings
    expected = ops_cookie_value(settings)
    if cookie and expected and secrets.compare_digest(cookie.encode(), expected.encode()):
        return True
    token = _bearer_token(authorization)
    valid = _same(token, settings.admin_token)
    await judge(state, address, token, valid=valid)
    return valid


async def require_operator(request: Request) -> None:
    """The operations pages: a browser without the cookie is sent to the login form, others get 401."""
    if await is_operator(
        request.app.state,
        _address(request),
        request.headers.get("authorization"),
        request.cookies.get(OPS_COOKIE),
    ):
        return
    if "text/html" in request.headers.get("accept", "") and request.method == "GET":
        raise HTTPException(303, "log in first", headers={"Location": f"/ops/login?next={request.url.path}"})
    raise _unauthorized("admin")


async def require_metrics(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if not await _checked(request, credentials, settings.metrics_token, settings.admin_token):
        raise _unauthorized("metrics")


# A browser's proof that it speaks for one signed-in shopper (`carousel.rules.identity`), as a header, or
# as the `shopper_token` query parameter of a recommendations link (an email, a page without scripts).
SHOPPER_TOKEN_HEADER = "x-shopper-token"


@dataclass(frozen=True)
class Caller:
    """Who a storefront request speaks for: the store's servers (any shopper), one shopper, or nobody."""

    storefront: bool
    shopper: str | None

    def speaks_for(self, user_id: str) -> bool:
        return self.storefront or self.shopper == user_id


async def storefront_caller(
    state: State, address: str | None, authorization: str | None, shopper_token: str | None, *, now: float
) -> Caller:
    """The storefront token (`Authorization: Bearer`, `judge`d: raises `LockedOut`) or a valid shopper
    token, checked in constant time. A shopper token is a signature with an expiry: an expired one is a
    returning browser, not a guess, and is not counted."""
    settings: Settings = state.settings
    token = _bearer_token(authorization)
    valid = _same(token, settings.storefront_token)
    await judge(state, address, token, valid=valid)
    if valid:
        return Caller(True, None)
    if shopper_token and settings.shopper_token_secret is not None:
        secret = settings.shopper_token_secret.get_secret_value()
        return Caller(False, verified_shopper(shopper_token, secret, now=now))
    return Caller(False, None)


AdminDep = Depends(require_admin)
OperatorDep = Depends(require_operator)
MetricsDep = Depends(require_metrics)
MarketingDep = Depends(require_marketing)
