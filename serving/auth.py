"""Bearer-token checks for the protected routes: admin (consent, erasure, stock) and marketing
(audiences). Tokens come from settings (`CAROUSEL_ADMIN_TOKEN`, `CAROUSEL_MARKETING_TOKEN`), have no
defaults, and the app refuses to start without them outside the demo (`check_tokens_configured`).

Comparison is constant-time (`secrets.compare_digest`) so response timing does not leak a token's
prefix. Routers are mounted with these as dependencies: `APIRouter(dependencies=[AdminDep])`.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from configs.settings import Settings
from serving.deps import get_app_settings

_bearer = HTTPBearer(auto_error=False, description="the admin or marketing token")


class MissingTokens(RuntimeError):
    """A protected route's token is not configured and this is not the demo."""


def check_tokens_configured(settings: Settings) -> None:
    """Refuse to serve without both tokens (except in the demo, which generates its own)."""
    missing = [
        f"CAROUSEL_{name.upper()}"
        for name in ("admin_token", "marketing_token")
        if getattr(settings, name) is None
    ]
    if missing and not settings.demo:
        raise MissingTokens(
            f"{' and '.join(missing)} not set: the protected routes would be open. "
            "Set them (16+ characters) or run the demo (CAROUSEL_DEMO=true)."
        )


def _matches(credentials: HTTPAuthorizationCredentials | None, token: SecretStr | None) -> bool:
    if credentials is None or token is None or credentials.scheme.lower() != "bearer":
        return False
    return secrets.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode())


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


AdminDep = Depends(require_admin)
MarketingDep = Depends(require_marketing)
