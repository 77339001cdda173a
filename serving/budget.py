"""A time budget per request: one that has not answered within `request_budget_s` gets a 503 and its
work is cancelled at its next await, so a stalled client or dependency cannot hold a worker's request
open for good (the events route also bounds how long a body may take to arrive). Every route has it but
`GET /v1/recommendations`, whose reads each have a deadline of their own (`serving.app`)."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.responses import error_response


class RequestBudget:
    """Pure ASGI middleware: cancel a request past `budget_s` and answer 503 if nothing was sent yet."""

    def __init__(self, app: ASGIApp, budget_s: float) -> None:
        self.app = app
        self.budget_s = budget_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.budget_s):
                await self.app(scope, receive, tracked)
        except TimeoutError:
            if started:  # part of the answer is out: nothing better to do than to cut it
                raise
            response = error_response(503, f"the request took longer than its budget of {self.budget_s:g}s")
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
