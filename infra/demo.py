"""`make demo`: the synthetic store generated and imported, the refresh DAG run once through Airflow,
then the API served in the foreground with ready-to-use URLs and the demo's tokens printed.

Idempotent: the store is generated once under var/demo-store, re-imports are no-ops, tokens are kept in
var/demo-tokens.json, and a new DAG run publishes a newer version.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from carousel.rules.identity import shopper_token

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
STORE = VAR / "demo-store"
BIN = Path(sys.executable).parent


def _carousel(*args: str) -> None:
    subprocess.run([str(BIN / "carousel"), *args], check=True, cwd=ROOT)


def demo_tokens() -> dict[str, str]:
    """The demo's tokens (admin, marketing, storefront) and shopper-token secret, created once and kept
    under var/ (a file from before one of them existed gets it added)."""
    path = VAR / "demo-tokens.json"
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = ("admin", "marketing", "storefront", "shopper_secret")
    if all(name in tokens for name in wanted):
        return tokens
    tokens = {name: tokens.get(name) or secrets.token_urlsafe(24) for name in wanted}
    VAR.mkdir(exist_ok=True)
    path.write_text(json.dumps(tokens))
    path.chmod(0o600)
    return tokens


def _shopper_with_personal_list() -> str:
    """A consenting treatment shopper who has a personal list in the live version (for the printed URL)."""
    from carousel.cache.client import sync_client
    from carousel.cache.versions import live_version, read_user_list
    from carousel.rules.holdout import TREATMENT, assign_variant
    from configs.settings import get_settings

    settings = get_settings()
    client = sync_client(settings)
    version = live_version(client)
    users = pd.read_parquet(STORE / "users.parquet", columns=["user_id", "consent_personalization"])
    for user in users.loc[users["consent_personalization"], "user_id"]:
        variant = assign_variant(user, salt=settings.holdout_salt, holdout_percent=settings.holdout_percent)
        if variant == TREATMENT and version and read_user_list(client, version, user):
            return str(user)
    raise RuntimeError("no shopper of the demo store has a personal list in the live version")


def main() -> int:
    from configs.settings import get_settings
    from infra.airflow_runner import run_dag_once
    from infra.stage_runner import stop_runner

    if not (STORE / "events.parquet").exists():
        _carousel("generate", "--out", str(STORE))
    for kind in ("items", "users", "events"):
        _carousel("import", kind, str(STORE / f"{kind}.parquet"))
    run_dag_once("carousel_refresh", datetime.now(UTC))
    # One run, and no scheduler to run the next: the stage runner would only hold memory beside the API.
    stop_runner(get_settings())
    tokens = demo_tokens()
    os.environ.setdefault("CAROUSEL_ADMIN_TOKEN", tokens["admin"])
    os.environ.setdefault("CAROUSEL_MARKETING_TOKEN", tokens["marketing"])
    os.environ.setdefault("CAROUSEL_STOREFRONT_TOKEN", tokens["storefront"])
    os.environ.setdefault("CAROUSEL_SHOPPER_TOKEN_SECRET", tokens["shopper_secret"])
    known = _shopper_with_personal_list()
    # A link as a store would put in a signed-in shopper's page or email: their token, valid a day.
    link_token = shopper_token(
        known, os.environ["CAROUSEL_SHOPPER_TOKEN_SECRET"], expires_at=int(time.time()) + 86_400
    )
    base = "http://127.0.0.1:8000"
    print(
        "\ncarousel demo is up:\n"
        f"  known shopper:     {base}/v1/recommendations?user_id={known}&n=10&shopper_token={link_token}\n"
        f"  anonymous visitor: {base}/v1/recommendations?session_id=demo-session&country=Germany\n"
        f"  shop (demo storefront):   {base}/shop\n"
        f"  ops (runs, data quality): {base}/ops   (log in with the admin token below)\n"
        f"  readiness:         {base}/health/ready\n"
        f"  publish status:    {BIN / 'carousel'} publish status\n"
        f"  admin token:       {tokens['admin']}\n"
        f"  marketing token:   {tokens['marketing']}\n"
        f"  storefront token:  {tokens['storefront']}\n",
        flush=True,
    )
    os.execv(str(BIN / "carousel"), [str(BIN / "carousel"), "serve", "--host", "127.0.0.1", "--port", "8000"])


if __name__ == "__main__":
    raise SystemExit(main())
