"""Bearer-token checks for the protected routes: admin (consent, erasure, stock, and the operations
pages: `/ops`, `/ops/lift`, Data Docs, the API docs), marketing (audiences) and metrics (`/metrics`, which
the admin token opens too). Tokens come from settings (`CAROUSEL_ADMIN_TOKEN`, `CAROUSEL_MARKETING_TOKEN`), have no
defaults, and the app refuses to start without them outside the demo (`check_tokens_configured`).

Comparison is constant-time (`secrets.compare_digest`) so response timing does not leak a token's
prefix. Routers are mounted with these as dependencies: `APIRouter(dependencies=[AdminDep])`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from carousel.rules.identity import verified_shopper
from configs.settings import Settings
from serving.deps import get_app_settings

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


async def require_admin(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if not _matches(credentials, settings.admin_token):
        raise _unauthorized("admin")


async def require_marketing(
    request: Request,
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    # The admin token opens the marketing routes too: operators can inspect audiences.
    if not (_matches(credentials, settings.marketing_token) or _matches(credentials, settings.admin_token)):
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


def is_operator(authorization: str | None, cookie: str | None, settings: Settings) -> bool:
    """Whether a request may see the operations pages: the admin bearer token, or the ops cookie."""
    if _same(_bearer_token(authorization), settings.admin_token):
        return True
    expected = ops_cookie_value(settings)
    return bool(cookie and expected and secrets.compare_digest(cookie.encode(), expected.encode()))


async def require_operator(
    request: Request, settings: Annotated[Settings, Depends(get_app_settings)]
) -> None:
    """The operations pages: a browser without the cookie is sent to the login form, others get 401."""
    if is_operator(request.headers.get("authorization"), request.cookies.get(OPS_COOKIE), settings):
        return
    if "text/html" in request.headers.get("accept", "") and request.method == "GET":
        raise HTTPException(303, "log in first", headers={"Location": f"/ops/login?next={request.url.path}"})
    raise _unauthorized("admin")


async def require_metrics(
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if not (_matches(credentials, settings.metrics_token) or _matches(credentials, settings.admin_token)):
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


def storefront_caller(
    authorization: str | None, shopper_token: str | None, settings: Settings, *, now: float
) -> Caller:
    """The storefront token (`Authorization: Bearer`) or a valid shopper token, checked in constant time."""
    if _same(_bearer_token(authorization), settings.storefront_token):
        return Caller(True, None)
    if shopper_token and settings.shopper_token_secret is not None:
        secret = settings.shopper_token_secret.get_secret_value()
        return Caller(False, verified_shopper(shopper_token, secret, now=now))
    return Caller(False, None)


AdminDep = Depends(require_admin)
OperatorDep = Depends(require_operator)
MetricsDep = Depends(require_metrics)
MarketingDep = Depends(require_marketing)
