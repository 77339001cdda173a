"""orjson responses: lists are stored pre-serialized, so responses are assembled from bytes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(
        content=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status_code=status_code,
        media_type="application/json",
    )


def error_response(status_code: int, problem: str, **details: Any) -> Response:
    return json_response({"error": problem, **details}, status_code=status_code)
