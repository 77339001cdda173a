"""Shared FastAPI dependencies: the settings and the list store, built once at start-up.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a thread
hop per dependency per request that the hot routes cannot afford."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from configs.settings import Settings
from serving.store import ListStore


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> ListStore:
    store: ListStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ListStore, Depends(get_store)]
