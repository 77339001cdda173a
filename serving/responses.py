"""orjson responses: lists are stored pre-serialized, so responses are assembled from bytes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response
from fastapi.exceptions import RequestValidationError


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(
        content=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status_code=status_code,
        media_type="application/json",
    )


def error_response(status_code: int, problem: str, **details: Any) -> Response:
    return json_response({"error": problem, **details}, status_code=status_code)


def validation_error_response(exc: RequestValidationError) -> Response:
    """422 naming every field that failed, by its place in the part of the request it came from
    (`n` for the query's n, `events.0.item_id` in a body)."""
    problems = [
        {"field": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "problem": err["msg"]}
        for err in exc.errors()
    ]
    fields = ", ".join(p["field"] for p in problems)
    return error_response(422, f"invalid request: {fields}", problems=problems)
