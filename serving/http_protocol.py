"""uvicorn's own answer to a request it cannot parse (a malformed request line or header, which never
reaches the app) in the API's JSON error shape, instead of uvicorn's plain text: every answer a client
gets from carousel is `{"error": ...}`. `carousel serve` runs uvicorn with this protocol."""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the 400 for an unparseable request as JSON."""

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"error": f"malformed HTTP request: {msg}"})
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
