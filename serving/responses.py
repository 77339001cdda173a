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


# A 422 names at most this many problems (and counts the rest): its size is bounded whatever was sent.
MAX_PROBLEMS = 20


def validation_error_response(exc: RequestValidationError) -> Response:
    """422 naming the fields that failed (the first `MAX_PROBLEMS`, with a count of the rest), by their
    place in the part of the request they came from (`n` for the query's n, `events.0.item_id` in a
    body)."""
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        return malformed_json_response(exc)
    problems = [
        {"field": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "problem": err["msg"]}
        for err in errors[:MAX_PROBLEMS]
    ]
    return problems_response(problems, total=len(errors))


def problems_response(problems: list[dict[str, str]], *, total: int) -> Response:
    """The 422 of every route: the first `MAX_PROBLEMS` problems ({"field", "problem"}) named, and how
    many more of the `total` there were."""
    named = problems[:MAX_PROBLEMS]
    fields = ", ".join(p["field"] for p in named)
    more = total - len(named)
    if more:
        return error_response(
            422, f"invalid request: {fields} and {more} more", problems=named, more_problems=more
        )
    return error_response(422, f"invalid request: {fields}", problems=named)


def malformed_json_response(exc: RequestValidationError) -> Response:
    """400 for a body that is not JSON, naming the line and column where parsing stopped."""
    error = exc.errors()[0]
    doc = exc.body if isinstance(exc.body, str) else ""
    pos = error["loc"][-1] if isinstance(error["loc"][-1], int) else 0
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    reason = (error.get("ctx") or {}).get("error", error["msg"])
    return error_response(400, f"malformed JSON at line {line}, column {column}: {reason}")


def wrong_content_type_response(content_type: str) -> Response:
    """415 for a body sent as something other than JSON."""
    return error_response(
        415, f"the body is sent as application/json, not {content_type or 'no content type'}"
    )


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
