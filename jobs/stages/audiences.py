"""Stage `audiences`, last of every refresh: the marketing audiences from the lake.

Extract: the lake's events (Spark), the live version's lists, marketing consent (the users table and
the API's records, `carousel.rules.consent`), erasures and the rows already in the audiences.
Transform: `jobs.marketing.audiences` (the triggers of the look-back window, found by Spark tasks; then
consent, erasure, holdout and the frequency cap on the triggered rows). Load:
`<var_dir>/audiences/<run_id>/<campaign>.parquet|csv` for email tools, and each campaign's rows in Redis,
replaced at once (`carousel.cache.audiences`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import pandas as pd

from carousel.cache.audiences import CAMPAIGNS, current_trigger_times, replace_campaign
from carousel.cache.client import sync_client
from carousel.cache.shoppers import erasures, recorded_consents
from carousel.cache.versions import live_version
from carousel.lake import Lake
from carousel.rules.consent import opted_out
from carousel.runs import folder_name
from jobs.features.session import spark_session
from jobs.marketing.audiences import ROW_COLUMNS, AudienceRules, apply_rules, spark_audiences
from jobs.stages.run import StageResult, StageRun


@dataclass(frozen=True)
class AudienceResult:
    counts: dict[str, dict[str, int]]
    files: list[str]


def run(job: StageRun) -> StageResult:
    built = build_audiences(job)
    return StageResult(
        ", ".join(f"{c} {n['send']:,} to send + {n['held_out']:,} held out" for c, n in built.counts.items()),
        built,
    )


def build_audiences(job: StageRun) -> AudienceResult:
    """Compute the audiences from the lake, write the run's files, replace the Redis rows."""
    settings = job.settings
    interval_end = job.interval_end.astimezone(UTC)
    rules = AudienceRules.from_settings(settings)
    lake = Lake(settings.lake_dir)
    client = sync_client(settings)
    if lake.event_files():
        found = spark_audiences(
            spark_session(settings).read.parquet(str(lake.events_dir)),
            now=interval_end,
            rules=rules,
            settings=settings,
            version=live_version(client),
        )
    else:
        found = pd.DataFrame(columns=ROW_COLUMNS[:4])
    no_marketing = opted_out(lake.opted_out("marketing"), recorded_consents(client), "marketing")
    rows = apply_rules(
        found,
        no_marketing=no_marketing,
        erased=erasures(client, settings),
        salt=settings.holdout_salt,
        holdout_percent=settings.holdout_percent,
        previous=current_trigger_times(client),
        cap_hours=rules.cap_hours,
    )
    out = settings.var_dir / "audiences" / folder_name(job.run_id)
    out.mkdir(parents=True, exist_ok=True)
    files, counts = [], {}
    for campaign in CAMPAIGNS:
        part = rows[rows["campaign"] == campaign]
        table = part.assign(items=part["items"].map(json.dumps))
        table.to_parquet(out / f"{campaign}.parquet", index=False)
        table.to_csv(out / f"{campaign}.csv", index=False)
        files += [str(out / f"{campaign}.parquet"), str(out / f"{campaign}.csv")]
        records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in part.to_dict("records")]
        replace_campaign(client, campaign, records, no_marketing=no_marketing)
        counts[campaign] = {
            "rows": len(part),
            "send": int((~part["held_out"]).sum()),
            "held_out": int(part["held_out"].sum()),
        }
    return AudienceResult(counts, files)
