"""`carousel report lift` on a small lake: the JSON report, the email section, errors, and `/ops/lift`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from storefront_auth import STOREFRONT

from carousel import cli
from carousel.lake import Lake
from carousel.rules.holdout import HOLDOUT, TREATMENT, assign_variant
from configs.settings import Settings, get_settings
from serving.app import create_app

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}

SALT = "lift-cli-salt"
NOW = pd.Timestamp("2026-10-25T00:00:00Z")


def _ids(arm: str, count: int, prefix: str) -> list[str]:
    found = [
        f"{prefix}{i}"
        for i in range(500)
        if assign_variant(f"{prefix}{i}", salt=SALT, holdout_percent=50) == arm
    ]
    assert len(found) >= count
    return found[:count]


TREATMENT_USERS = _ids(TREATMENT, 6, "t")
HOLDOUT_USERS = _ids(HOLDOUT, 4, "h")


def _event(user: str, event_type: str, ts: str, quantity: int = 1, price: float = 10.0) -> dict[str, object]:
    return {
        "user_id": user,
        "session_id": f"s-{user}",
        "item_id": "i1",
        "event_type": event_type,
        "ts": ts,
        "quantity": quantity,
        "price": price,
        "country": "France",
        "device": "mobile",
        "referrer": None,
    }


@pytest.fixture
def lake_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The test settings' lake holding 10 shoppers (treatment: 3 of 6 buy 30.0 in all; holdout: 1 of 4
    buys 20.0) in October 2026, and the CLI pointed at those settings with a 50% holdout."""
    rows = [_event(user, "view", "2026-10-05T10:00:00Z") for user in TREATMENT_USERS + HOLDOUT_USERS]
    rows += [_event(user, "purchase", "2026-10-06T10:00:00Z") for user in TREATMENT_USERS[:3]]
    rows += [_event(HOLDOUT_USERS[0], "purchase", "2026-10-20T10:00:00Z", 2, 10.0)]
    lake = Lake(settings.lake_dir)
    lake.upsert_items(
        pd.DataFrame(
            {
                "item_id": ["i1"],
                "title": ["Lamp"],
                "category": ["home/lighting"],
                "brand": ["Acme"],
                "price": [10.0],
                "in_stock": [True],
                "first_seen": ["2026-01-01T00:00:00Z"],
            }
        ),
        source="test items",
    )
    lake.append_events(pd.DataFrame(rows), now=NOW, source="test events")
    for key, value in {
        "CAROUSEL_REDIS_URL": settings.redis_url,
        "CAROUSEL_VAR_DIR": str(settings.var_dir),
        "CAROUSEL_LAKE_DIR": str(settings.lake_dir),
        "CAROUSEL_HOLDOUT_PERCENT": "50",
        "CAROUSEL_HOLDOUT_SALT": SALT,
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def _write_audience(settings: Settings) -> None:
    """One run's abandoned-cart audience: two sent shoppers (one buys 2 days later), one held out."""
    out = settings.var_dir / "audiences" / "manual__20261005T120000Z"
    out.mkdir(parents=True)
    pd.DataFrame(
        {
            "campaign": ["abandoned_cart"] * 3,
            "user_id": [TREATMENT_USERS[0], TREATMENT_USERS[4], HOLDOUT_USERS[1]],
            "triggered_at": pd.to_datetime(["2026-10-04T10:00:00Z"] * 3, utc=True),
            "items": ['["i1"]'] * 3,
            "variant": [TREATMENT, TREATMENT, HOLDOUT],
            "held_out": [False, False, True],
        }
    ).to_parquet(out / "abandoned_cart.parquet", index=False)


def test_report_lift_writes_json_and_the_ops_page_shows_it(
    lake_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default window is the 30 days ending the midnight after the newest event; the JSON has each
    arm's figures; without audience files the email section says so; /ops/lift shows the figures."""
    settings = lake_env
    with TestClient(create_app(settings), headers=STOREFRONT) as api:
        empty = api.get("/ops/lift", headers=ADMIN)
        assert empty.status_code == 200 and "no lift report yet" in empty.text

        assert cli.main(["report", "lift"]) == 0
        assert "wrote" in capsys.readouterr().err
        report = json.loads((settings.var_dir / "reports" / "lift.json").read_text())
        assert report["window"] == {"start": "2026-09-21T00:00:00+00:00", "end": "2026-10-21T00:00:00+00:00"}
        arms = report["storefront"]["arms"]
        assert (arms[TREATMENT]["shoppers"], arms[TREATMENT]["converters"]) == (6, 3)
        assert (arms[HOLDOUT]["shoppers"], arms[HOLDOUT]["converters"]) == (4, 1)
        assert arms[TREATMENT]["revenue"] == pytest.approx(30.0)
        assert arms[HOLDOUT]["revenue_per_shopper"] == pytest.approx(20.0 / 4)
        assert report["storefront"]["lift"]["conversion_rate"]["difference"] == pytest.approx(0.5 - 0.25)
        assert report["email"]["available"] is False and "no email audiences" in report["email"]["note"]

        page = api.get("/ops/lift", headers=ADMIN)
        assert page.status_code == 200
        for figure in ("50.00%", "25.00%", "+25.00 pp", "5.00", "<svg"):
            assert figure in page.text
        assert "no email audiences" in page.text


def test_report_lift_reads_audience_files(lake_env: Settings, tmp_path: Path) -> None:
    """Audience files under var/audiences give the email section: the sent shopper who bought within
    7 days converts, held-out rows are the holdout arm; --out and an explicit window are honoured."""
    _write_audience(lake_env)
    out = tmp_path / "lift.json"
    assert (
        cli.main(["report", "lift", "--start", "2026-10-01", "--end", "2026-10-15", "--out", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    assert report["window"]["start"] == "2026-10-01T00:00:00+00:00"
    email = report["email"]
    assert email["available"] is True
    arms = email["campaigns"]["abandoned_cart"]["arms"]
    assert (arms[TREATMENT]["shoppers"], arms[TREATMENT]["converters"]) == (2, 1)
    assert arms[TREATMENT]["revenue"] == pytest.approx(10.0)
    assert (arms[HOLDOUT]["shoppers"], arms[HOLDOUT]["converters"]) == (1, 0)
    # The holdout shopper's purchase on 2026-10-20 is outside [2026-10-01, 2026-10-15).
    assert report["storefront"]["arms"][HOLDOUT]["converters"] == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--start", "yesterday"], "--start: 'yesterday' is not an ISO timestamp"),
        (["--start", "2026-10-10", "--end", "2026-10-01"], "must be before end"),
        (["--start", "2025-01-01", "--end", "2025-02-01"], "no events in the window"),
    ],
)
def test_report_lift_refuses_bad_input(
    lake_env: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    """Bad dates, an empty or inverted window exit 1 with a one-line reason and write nothing."""
    assert cli.main(["report", "lift", *argv]) == 1
    assert needle in " ".join(capsys.readouterr().err.split())
    assert not (lake_env.var_dir / "reports" / "lift.json").exists()
