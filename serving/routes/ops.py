"""`GET /ops`: the page operators and data engineers look at.

What is live and how fresh it is; the recent pipeline runs (mode, model, status, stage durations as a
chart and in numbers, counts, published version, each run's Great Expectations Data Docs, served under
`/ops/quality/<run_id>/data_docs/index.html`); the newest model's out-of-sample figures; the last offline
evaluation (`var/reports/evaluation.json`, written by `carousel evaluate`); and a link to the holdout
lift (`/ops/lift`). Plain HTML with inline SVG charts drawn here: no scripts, nothing fetched.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from redis.exceptions import RedisError

from carousel.cache.memory import memory_warnings, read_memory_async
from carousel.models import ModelCatalog
from carousel.runs import RunHistory
from configs.settings import Settings
from serving.auth import OperatorDep
from serving.deps import SettingsDep, StoreDep
from serving.store import ListStore, StoreUnavailable

router = APIRouter(tags=["ops"], dependencies=[OperatorDep])

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .ok { color: #11772d; } .bad { color: #b00020; } code { font-size: 13px; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 1rem; }
"""
_STAGE_COLOURS = {
    "drain_events": "#c9b3e6",
    "check_inputs": "#9aa5b1",
    "compute": "#2f6fb0",
    "train": "#5a8fd0",
    "validate": "#e0a100",
    "publish": "#11772d",
    "audiences": "#c2185b",
}


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _docs_link(run: dict[str, Any], quality_dir: Path) -> str:
    validation = run.get("validation") or {}
    docs = validation.get("docs_index")
    if not docs:
        return ""
    try:
        relative = Path(docs).resolve().relative_to((quality_dir / "runs").resolve())
    except ValueError:
        return ""
    verdict = "passed" if validation.get("success") else "failed"
    css = "ok" if validation.get("success") else "bad"
    return f'<a class="{css}" href="/ops/quality/{html.escape(relative.as_posix())}">{verdict}</a>'


def _stage_chart(runs: list[dict[str, Any]]) -> str:
    """Horizontal stacked bars: one per run (newest on top), a segment per stage, scaled to the slowest."""
    timed = [r for r in runs if r.get("stages")][:15]
    if not timed:
        return "<p>No timed runs yet.</p>"
    longest = max(sum(float(v) for v in (r["stages"] or {}).values()) for r in timed) or 1.0
    width, bar, gap, label = 640.0, 16, 6, 230
    rows = []
    for k, run in enumerate(timed):
        y = k * (bar + gap)
        x = float(label)
        rows.append(f'<text x="0" y="{y + 12}" font-size="11">{_cell(str(run.get("run_id"))[:34])}</text>')
        for stage, seconds in (run.get("stages") or {}).items():
            w = width * float(seconds) / longest
            colour = _STAGE_COLOURS.get(stage, "#777")
            rows.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar}" fill="{colour}">'
                f"<title>{_cell(stage)} {float(seconds):.1f}s</title></rect>"
            )
            x += w
        total = sum(float(v) for v in (run.get("stages") or {}).values())
        rows.append(f'<text x="{x + 4:.1f}" y="{y + 12}" font-size="11">{total:.1f}s</text>')
    height = len(timed) * (bar + gap)
    legend = "".join(
        f'<span style="background:{c}"></span>{html.escape(s)}' for s, c in _STAGE_COLOURS.items()
    )
    return (
        f'<svg role="img" aria-label="stage durations" width="{label + width + 60:.0f}" height="{height}">'
        + "".join(rows)
        + f'</svg><div class="legend">{legend}</div>'
    )


def _freshness(generated_at: str | None) -> str:
    if not generated_at:
        return "unknown"
    age = (datetime.now(UTC) - datetime.fromisoformat(generated_at)).total_seconds()
    if age < 120:
        return f"{age:.0f} s old"
    if age < 7200:
        return f"{age / 60:.0f} min old"
    return f"{age / 3600:.1f} h old"


def _model_section(settings: Settings) -> str:
    store = ModelCatalog(settings.models_dir)
    number = store.latest()
    if number is None:
        return "<p>No model trained yet (the nightly <code>carousel_retrain</code> stores them).</p>"
    meta = store.describe(number)
    figures = (meta.get("evaluation") or {}).get("ndcg@10") or {}
    bars = _figure_bars({name: float(v) for name, v in figures.items()}) if figures else ""
    windows = ", ".join(
        f"{w['features_until'][:10]} ({w['shoppers']} buyers)" for w in meta.get("windows", [])
    )
    return (
        f"<p>Model <b>{number}</b> trained on data up to {_cell(meta.get('as_of'))}; label windows from "
        f"{_cell(windows)}; {_cell(meta.get('train_rows'))} training rows. Out of sample (ranker trained on "
        "the older window, measured on the newest), NDCG@10:</p>" + bars + guard_table(meta.get("guard"))
    )


def guard_table(guard: dict[str, Any] | None) -> str:
    """The guard's comparison on the newest label window (`jobs.ranking.guard`): per task and activity
    band the buying shoppers, each scorer's NDCG@10 and the one that serves the band (in bold)."""
    if not guard or not guard.get("comparison"):
        return "<p>No baseline guard on this model: the ranker serves every shopper.</p>"
    rule = guard.get("rule") or {}
    scorers = ["ranker", "als", "popularity", "repurchase", "explore", "blend"]
    rows = []
    for task, bands in guard["comparison"].items():
        for band, figures in bands.items():
            served = figures.get("serve")
            cells = []
            for scorer in scorers:
                value = (figures.get("ndcg@10") or {}).get(scorer)
                text = "" if value is None else f"{float(value):.3f}"
                cells.append(f"<td><b>{text}</b></td>" if scorer == served else f"<td>{text}</td>")
            rows.append(
                f"<tr><td>{_cell(task)}</td><td>{_cell(band)}</td><td>{_cell(figures.get('shoppers'))}</td>"
                + "".join(cells)
                + f"<td>{_cell(served)}</td></tr>"
            )
    return (
        "<p>Guard: per task and band of past orders, NDCG@10 on the newest window; a baseline serves a band "
        f"only with at least {_cell(rule.get('min_shoppers'))} shoppers, {float(rule.get('margin', 0)):.0%} above "
        f"the ranker and {_cell(rule.get('min_z'))} standard errors.</p>"
        "<table><tr><th>task</th><th>past orders</th><th>shoppers</th>"
        + "".join(f"<th>{s}</th>" for s in scorers)
        + "<th>served by</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _figure_bars(figures: dict[str, float]) -> str:
    top = max(figures.values()) or 1.0
    rows = []
    for k, (name, value) in enumerate(figures.items()):
        y = k * 22
        w = 360 * value / top
        rows.append(
            f'<text x="0" y="{y + 13}" font-size="12">{_cell(name)}</text>'
            f'<rect x="120" y="{y}" width="{w:.1f}" height="16" fill="#2f6fb0"></rect>'
            f'<text x="{124 + w:.1f}" y="{y + 13}" font-size="12">{value:.3f}</text>'
        )
    return (
        f'<svg role="img" aria-label="figures" width="560" height="{len(figures) * 22}">{"".join(rows)}</svg>'
    )


def _evaluation_section(settings: Settings) -> str:
    path = settings.reports_dir / "evaluation.json"
    if not path.exists():
        return "<p>No offline evaluation yet: run <code>carousel evaluate</code>.</p>"
    report = json.loads(path.read_text())
    parts = []
    for task, models in (report.get("tasks") or {}).items():
        parts.append(
            f"<h3>{_cell(task)}</h3>" + _figure_bars({m: float(v["ndcg@10"]) for m, v in models.items()})
        )
    return f"<p>NDCG@10 on the test period of {_cell(report.get('dataset'))}:</p>" + "".join(parts)


async def _redis_memory(store: ListStore) -> str:
    """Each node's memory against its maxmemory and its eviction policy, and what needs acting on."""
    try:
        client = store.client
        nodes = await store.call(lambda: read_memory_async(client))
    except (RedisError, OSError, StoreUnavailable) as exc:
        return f"<p>Redis unavailable ({_cell(type(exc).__name__)})</p>"
    rows = "".join(
        f"<tr><td><code>{_cell(n.node)}</code></td><td>{n.used / 1e6:.1f} MB</td>"
        f"<td>{f'{n.limit / 1e6:.1f} MB ({n.share:.0%} used)' if n.share is not None else 'no limit'}</td>"
        f"<td><code>{_cell(n.policy)}</code></td></tr>"
        for n in nodes
    )
    warnings = "".join(f'<p class="bad">{_cell(w)}</p>' for w in memory_warnings(nodes))
    return (
        "<table><tr><th>node</th><th>used</th><th>maxmemory</th><th>eviction policy</th></tr>"
        f"{rows}</table>{warnings}"
    )


@router.get("/ops", response_class=HTMLResponse)
async def ops_page(settings: SettingsDep, store: StoreDep) -> Response:
    """Live version, freshness, Redis's memory, runs with their stage chart, the model's and the
    evaluation's figures."""
    try:
        live = await store.live_version()
        meta = (await store.version_meta(live) or {}) if live else {}
    except (RedisError, OSError, StoreUnavailable) as exc:
        live, meta = f"Redis unavailable ({type(exc).__name__})", {}
    runs = RunHistory(settings.runs_dir / "history.sqlite").recent(30)
    rows = []
    for run in runs:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in (run.get("stages") or {}).items())
        counts = run.get("counts") or {}
        model = run.get("model") or {}
        status = run.get("status", "")
        css = (
            "bad"
            if status == "failed"
            else "ok"
            if status in ("published", "already_live", "trained")
            else ""
        )
        rows.append(
            "<tr>"
            f"<td><code>{_cell(run.get('run_id'))}</code></td>"
            f"<td>{_cell(run.get('interval_start'))} &ndash; {_cell(run.get('interval_end'))}</td>"
            f"<td>{_cell(run.get('mode'))}</td>"
            f"<td>{_cell(model.get('number'))}</td>"
            f'<td class="{css}">{_cell(status)}</td>'
            f"<td>{_cell(stages)}</td>"
            f"<td>{_cell(counts.get('user_lists'))} / {_cell(counts.get('segment_lists'))}</td>"
            f"<td>{_docs_link(run, settings.quality_dir)}</td>"
            f"<td><code>{_cell(run.get('published_version'))}</code></td>"
            f"<td>{_cell(run.get('error', ''))[:300]}</td>"
            "</tr>"
        )
    live_model = (meta.get("model") or {}).get("number")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>carousel ops</title>
<style>{_STYLE}</style></head><body>
<h1>carousel ops</h1>
<p>Live version: <code>{_cell(live or "(none)")}</code> ({_cell(meta.get("kind"))} on base
<code>{_cell(meta.get("base"))}</code>, model {_cell(live_model)}) &middot; generated at
{_cell(meta.get("generated_at"))} (<b>{_cell(_freshness(meta.get("generated_at")))}</b>)
&middot; personal lists written {_cell(meta.get("user_lists"))} &middot; segment lists
{_cell(meta.get("segment_lists"))} &middot; <a href="/ops/lift">holdout lift</a> &middot; <a href="/shop">shop</a></p>
<h2>Stage durations</h2>
{_stage_chart(runs)}
<h2>Pipeline runs</h2>
<table><tr><th>run</th><th>data interval</th><th>mode</th><th>model</th><th>status</th><th>stages</th>
<th>personal / segment lists</th><th>data quality</th><th>published</th><th>error</th></tr>
{"".join(rows) or '<tr><td colspan="10">no runs yet</td></tr>'}
</table>
<h2>Redis memory</h2>
{await _redis_memory(store)}
<h2>Model</h2>
{_model_section(settings)}
<h2>Last offline evaluation</h2>
{_evaluation_section(settings)}
</body></html>"""
    return HTMLResponse(body)
