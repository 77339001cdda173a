"""Shared FastAPI dependencies: the settings and the list store, built once at start-up."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from configs.settings import Settings
from serving.store import ListStore


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> ListStore:
    store: ListStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ListStore, Depends(get_store)]
