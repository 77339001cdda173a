"""`GET /ops`: a plain page for operators and data engineers: what is live, the recent pipeline runs
with their stage timings and validation outcome, and each run's Great Expectations Data Docs
(served under `/ops/quality/<run_id>/data_docs/index.html`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from redis.exceptions import RedisError

from jobs.run_history import RunHistory
from serving.deps import SettingsDep, StoreDep
from serving.store import StoreUnavailable

router = APIRouter(tags=["ops"])

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .ok { color: #11772d; } .bad { color: #b00020; } code { font-size: 13px; }
"""


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


@router.get("/ops", response_class=HTMLResponse)
async def ops_page(settings: SettingsDep, store: StoreDep) -> Response:
    """Live version, freshness and the last pipeline runs."""
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
        status = run.get("status", "")
        css = "bad" if status == "failed" else "ok" if status in ("published", "already_live") else ""
        rows.append(
            "<tr>"
            f"<td><code>{_cell(run.get('run_id'))}</code></td>"
            f"<td>{_cell(run.get('interval_end'))}</td>"
            f'<td class="{css}">{_cell(status)}</td>'
            f"<td>{_cell(stages)}</td>"
            f"<td>{_cell(counts.get('user_lists'))} / {_cell(counts.get('segment_lists'))}</td>"
            f"<td>{_docs_link(run, settings.quality_dir)}</td>"
            f"<td><code>{_cell(run.get('published_version'))}</code></td>"
            f"<td>{_cell(run.get('error', ''))[:300]}</td>"
            "</tr>"
        )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>carousel ops</title>
<style>{_STYLE}</style></head><body>
<h1>carousel ops</h1>
<p>Live version: <code>{_cell(live or "(none)")}</code> ({_cell(meta.get("kind"))} on base
<code>{_cell(meta.get("base"))}</code>, model {_cell((meta.get("model") or {}).get("number"))})
&middot; generated at {_cell(meta.get("generated_at"))}
&middot; personal lists written {_cell(meta.get("user_lists"))} &middot; segment lists {_cell(meta.get("segment_lists"))}</p>
<h2>Pipeline runs</h2>
<table><tr><th>run</th><th>data interval</th><th>mode</th><th>model</th><th>status</th><th>stages</th>
<th>personal / segment lists</th><th>data quality</th><th>published</th><th>error</th></tr>
{"".join(rows) or '<tr><td colspan="10">no runs yet</td></tr>'}
</table></body></html>"""
    return HTMLResponse(body)
