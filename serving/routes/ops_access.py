"""Who may open the operations pages: `GET /ops/login` (a form for the admin token), `POST /ops/login`
(sets the ops cookie, `serving.auth.OPS_COOKIE`), `POST /ops/logout`; the API docs (`/docs`, `/redoc`,
`/openapi.json`) behind the same check; and `OperatorOnly`, which guards the Data Docs files served as a
static mount (a mount takes no dependencies)."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.auth import OPS_COOKIE, LockedOut, OperatorDep, is_operator, ops_cookie_value
from serving.deps import SettingsDep
from serving.responses import error_response, json_response

router = APIRouter(tags=["ops"], include_in_schema=False)
docs_router = APIRouter(include_in_schema=False, dependencies=[OperatorDep])

_LOGIN = """<!doctype html><html><head><meta charset="utf-8"><title>carousel ops: log in</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2rem; }} .bad {{ color: #b00020; }}</style>
</head><body><h1>carousel ops: log in</h1>{problem}
<form method="post" action="/ops/login"><input type="hidden" name="next" value="{next}">
<label>Admin token <input type="password" name="token" id="token" autocomplete="current-password"></label>
<button type="submit" id="login">Log in</button></form></body></html>"""


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never `//host` or a URL): the login cannot redirect elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ops"


@router.get("/ops/login", response_class=HTMLResponse)
async def login_form(next: str | None = None) -> HTMLResponse:
    return HTMLResponse(_LOGIN.format(problem="", next=html.escape(_safe_next(next))))


@router.post("/ops/login", response_class=HTMLResponse)
async def login(request: Request, settings: SettingsDep) -> Response:
    """A form post with the admin token: the ops cookie (HttpOnly, SameSite=Strict) and a redirect."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    target = _safe_next((form.get("next") or [""])[0])
    address = request.client.host if request.client else None
    try:
        valid = bool(token) and await is_operator(request.app.state, address, f"Bearer {token}", None)
    except LockedOut as locked:
        problem = (
            f'<p class="bad">Too many wrong tokens from this address: try again in {locked.wait_s}s.</p>'
        )
        page = HTMLResponse(_LOGIN.format(problem=problem, next=html.escape(target)), status_code=429)
        page.headers["Retry-After"] = str(locked.wait_s)
        return page
    if not valid:
        problem = '<p class="bad">That is not the admin token.</p>'
        return HTMLResponse(_LOGIN.format(problem=problem, next=html.escape(target)), status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        OPS_COOKIE,
        ops_cookie_value(settings) or "",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/ops/logout")
async def logout() -> Response:
    response = RedirectResponse("/ops/login", status_code=303)
    response.delete_cookie(OPS_COOKIE)
    return response


@docs_router.get("/openapi.json")
async def openapi(request: Request) -> Response:
    schema: dict[str, Any] = request.app.openapi()
    return json_response(schema)


@docs_router.get("/docs")
async def swagger() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="carousel API")


@docs_router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="carousel API")


class OperatorOnly:
    """An ASGI app (a static mount) opened only to operators, with the rule of `is_operator`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not await self._operator(scope, receive, send):
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _operator(scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether the request may go on; else its refusal has been sent."""
        headers = Headers(scope=scope)
        cookie = cookie_parser(headers.get("cookie", "")).get(OPS_COOKIE)
        client = scope.get("client")
        try:
            if await is_operator(
                scope["app"].state, client[0] if client else None, headers.get("authorization"), cookie
            ):
                return True
        except LockedOut as locked:
            await locked.response()(scope, receive, send)
            return False
        if "text/html" in headers.get("accept", ""):
            await RedirectResponse(f"/ops/login?next={scope['path']}", status_code=303)(scope, receive, send)
        else:
            await error_response(401, "a valid admin bearer token is required")(scope, receive, send)
        return False
