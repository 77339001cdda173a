"""The ASGI entry point uvicorn imports (`serving.main:app`), one app per worker process."""

from serving.app import create_app

app = create_app()
