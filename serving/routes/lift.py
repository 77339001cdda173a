"""`GET /ops/lift`: the latest holdout lift report (`carousel report lift`, ``jobs.evaluation.lift``) as a
plain page.

It reads `<var_dir>/reports/lift.json` on every request (the CLI replaces it atomically) and shows, for
the storefront and for each email campaign, conversion rate and revenue per shopper per arm, the
treatment-minus-holdout difference with its 95% interval and p-value, and an inline SVG bar chart with
error bars drawn here, server-side (no scripts). Every value from the file is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from serving.auth import OperatorDep
from serving.deps import SettingsDep

router = APIRouter(tags=["ops"], dependencies=[OperatorDep])

REPORT_NAME = "lift.json"  # under settings.reports_dir, where `carousel report lift` writes by default
ARMS = ("treatment", "holdout")
_COLOURS = {"treatment": "#3b6fb6", "holdout": "#9a9a9a"}

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #8a5a00; } .muted { color: #666; } code { font-size: 13px; } svg { margin-top: 1rem; }
"""

Formatter = Callable[[Any], str]


# Formatting lives here rather than being imported from jobs.evaluation.lift: that module pulls in pandas and
# scipy, which the API process does not otherwise load.
def _number(value: Any, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value * scale:{spec}}{suffix}"


def _percent(value: Any) -> str:
    return _number(value, ".2f", 100, "%")


def _points(value: Any) -> str:
    return _number(value, "+.2f", 100, " pp")


def _relative(value: Any) -> str:
    return _number(value, "+.1f", 100, "%")


def _money(value: Any) -> str:
    return _number(value, ",.2f")


def _signed_money(value: Any) -> str:
    return _number(value, "+,.2f")


def _count(value: Any) -> str:
    return f"{value:,d}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def _p_value(value: Any) -> str:
    return _number(value, ".3g")


def _interval(bounds: Any, fmt: Formatter) -> str:
    if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
        return "-"
    return f"{fmt(bounds[0])} to {fmt(bounds[1])}"


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _num_cell(text: str) -> str:
    return f'<td class="num">{_e(text)}</td>'


def _arms_table(arms: Mapping[str, Any], *, storefront: bool) -> str:
    head = "<tr><th>arm</th><th>shoppers</th>"
    if storefront:
        head += "<th>signed in</th><th>anonymous</th>"
    head += (
        "<th>converters</th><th>conversion rate</th><th>95% CI</th><th>revenue</th>"
        "<th>revenue per shopper</th><th>95% CI</th></tr>"
    )
    rows = []
    for arm in ARMS:
        figures = arms.get(arm) or {}
        cells = [f"<td>{_e(arm)}</td>", _num_cell(_count(figures.get("shoppers")))]
        if storefront:
            cells += [
                _num_cell(_count(figures.get("signed_in"))),
                _num_cell(_count(figures.get("anonymous"))),
            ]
        cells += [
            _num_cell(_count(figures.get("converters"))),
            _num_cell(_percent(figures.get("conversion_rate"))),
            _num_cell(_interval(figures.get("conversion_rate_ci95"), _percent)),
            _num_cell(_money(figures.get("revenue"))),
            _num_cell(_money(figures.get("revenue_per_shopper"))),
            _num_cell(_interval(figures.get("revenue_per_shopper_ci95"), _money)),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _lift_table(lift: Mapping[str, Any]) -> str:
    rate = lift.get("conversion_rate") or {}
    spend = lift.get("revenue_per_shopper") or {}
    rows = [
        (
            "conversion rate",
            _percent(rate.get("treatment")),
            _percent(rate.get("holdout")),
            _points(rate.get("difference")),
            _interval(rate.get("ci95"), _points),
            _relative(rate.get("relative_difference"))
            + (f" ({_interval(rate.get('relative_ci95'), _relative)})" if rate.get("relative_ci95") else ""),
            _p_value(rate.get("p_value")),
            rate.get("notes") or [],
        ),
        (
            "revenue per shopper",
            _money(spend.get("treatment")),
            _money(spend.get("holdout")),
            _signed_money(spend.get("difference")),
            _interval(spend.get("ci95"), _signed_money),
            _relative(spend.get("relative_difference")),
            _p_value(spend.get("p_value")),
            spend.get("notes") or [],
        ),
    ]
    body = []
    for name, treatment, holdout, difference, ci, relative, p_value, notes in rows:
        note_text = "; ".join(str(n) for n in notes) if isinstance(notes, list) else str(notes)
        body.append(
            f"<tr><td>{_e(name)}</td>{_num_cell(treatment)}{_num_cell(holdout)}"
            f"{_num_cell(difference)}{_num_cell(ci)}{_num_cell(relative)}{_num_cell(p_value)}"
            f'<td class="note">{_e(note_text)}</td></tr>'
        )
    return (
        "<table><tr><th>lift</th><th>treatment</th><th>holdout</th><th>difference</th>"
        "<th>95% CI</th><th>relative</th><th>p-value</th><th>notes</th></tr>"
        f"{''.join(body)}</table>"
    )


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if abs(value) < float("inf") else None


def _panel(title: str, bars: list[tuple[str, Any, Any]], fmt: Formatter, x0: float) -> str:
    """One chart panel: a bar per arm with its 95% interval as an error bar, at horizontal offset x0."""
    top, height, bar_w, gap = 34.0, 130.0, 56.0, 36.0
    values = [_finite(v) for _, v, _ in bars]
    cis = [
        (_finite(ci[0]), _finite(ci[1])) if isinstance(ci, list) and len(ci) == 2 else (None, None)
        for _, _, ci in bars
    ]
    highest = max([v for v in values if v is not None] + [hi for _, hi in cis if hi is not None] + [0.0])
    scale = height / (highest * 1.1) if highest > 0 else 0.0
    base = top + height
    parts = [f'<text x="{x0 + 10:.0f}" y="18" font-size="13" font-weight="600">{_e(title)}</text>']
    parts.append(
        f'<line x1="{x0 + 10:.0f}" y1="{base:.1f}" x2="{x0 + 230:.0f}" y2="{base:.1f}" stroke="#999"/>'
    )
    for i, ((label, _, _), value, (lo, hi)) in enumerate(zip(bars, values, cis, strict=True)):
        x = x0 + 30 + i * (bar_w + gap)
        centre = x + bar_w / 2
        if value is not None:
            h = max(0.0, value) * scale
            parts.append(
                f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.0f}" height="{h:.1f}" '
                f'fill="{_COLOURS.get(label, "#777")}"><title>{_e(label)}: {_e(fmt(value))}</title></rect>'
            )
        label_y = base - max(0.0, value or 0.0) * scale
        if lo is not None and hi is not None:
            y_lo, y_hi = base - max(0.0, lo) * scale, base - max(0.0, hi) * scale
            parts.append(
                f'<g stroke="#222" stroke-width="1.3"><line x1="{centre:.1f}" y1="{y_lo:.1f}" '
                f'x2="{centre:.1f}" y2="{y_hi:.1f}"/>'
                f'<line x1="{centre - 8:.1f}" y1="{y_lo:.1f}" x2="{centre + 8:.1f}" y2="{y_lo:.1f}"/>'
                f'<line x1="{centre - 8:.1f}" y1="{y_hi:.1f}" x2="{centre + 8:.1f}" y2="{y_hi:.1f}"/></g>'
            )
            label_y = min(label_y, y_hi)
        parts.append(
            f'<text x="{centre:.1f}" y="{label_y - 5:.1f}" font-size="11" text-anchor="middle">'
            f"{_e(fmt(value))}</text>"
            f'<text x="{centre:.1f}" y="{base + 16:.1f}" font-size="12" text-anchor="middle">{_e(label)}</text>'
        )
    return "".join(parts)


def _chart(arms: Mapping[str, Any], title: str) -> str:
    """Conversion rate and revenue per shopper per arm, with 95% error bars, as inline SVG."""
    figures = {arm: arms.get(arm) or {} for arm in ARMS}
    rate = [(arm, f.get("conversion_rate"), f.get("conversion_rate_ci95")) for arm, f in figures.items()]
    spend = [
        (arm, f.get("revenue_per_shopper"), f.get("revenue_per_shopper_ci95")) for arm, f in figures.items()
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="500" height="190" viewBox="0 0 500 190" '
        f'role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
        f"{_panel('conversion rate', rate, _percent, 0)}"
        f"{_panel('revenue per shopper', spend, _money, 250)}</svg>"
    )


def _section(title: str, section: Mapping[str, Any], *, storefront: bool) -> str:
    arms = section.get("arms") or {}
    heading = "" if storefront else f"<h3>{_e(title)}</h3>"  # the storefront has its own <h2>
    return (
        f"{heading}{_chart(arms, f'{title}: treatment vs holdout, 95% intervals')}"
        f"{_arms_table(arms, storefront=storefront)}"
        f"{_lift_table(section.get('lift') or {})}"
    )


def _page(title: str, body: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_STYLE}</style></head><body>
<p><a href="/ops">&larr; ops</a></p>
<h1>{_e(title)}</h1>
{body}
</body></html>"""


def render_report(report: Mapping[str, Any]) -> str:
    """The whole page for one lift report (the dict `carousel report lift` writes)."""
    window = report.get("window") or {}
    method = report.get("method") or {}
    parts = [
        f"<p>Window <code>{_e(window.get('start'))}</code> to <code>{_e(window.get('end'))}</code> (end "
        f"excluded) &middot; holdout {_e(_number(report.get('holdout_percent'), 'g'))}% &middot; generated "
        f"{_e(report.get('generated_at'))}</p>",
        f'<p class="muted">Conversion rate: {_e(method.get("conversion_rate"))}. Revenue per shopper: '
        f"{_e(method.get('revenue_per_shopper'))}. Intervals are 95%; p-values are two-sided.</p>",
    ]
    storefront = report.get("storefront") or {}
    parts.append("<h2>Storefront</h2>")
    parts.append(f'<p class="muted">Unit: {_e(storefront.get("unit"))}</p>')
    parts.append(_section("storefront", storefront, storefront=True))
    email = report.get("email") or {}
    parts.append("<h2>Email</h2>")
    if email.get("note"):
        parts.append(f'<p class="note">{_e(email.get("note"))}</p>')
    if email.get("available") and isinstance(email.get("overall"), Mapping):
        parts.append(
            f'<p class="muted">Unit: {_e(email.get("unit"))}; a purchase within '
            f"{_e(email.get('window_days'))} days after the trigger converts.</p>"
        )
        parts.append(_section("all campaigns", email["overall"], storefront=False))
        campaigns = email.get("campaigns") or {}
        for name, section in campaigns.items() if isinstance(campaigns, Mapping) else []:
            if isinstance(section, Mapping):
                parts.append(_section(f"campaign {name}", section, storefront=False))
    elif not email.get("note"):
        parts.append("<p>No email lift in this report.</p>")
    return _page("carousel holdout lift", "\n".join(parts))


@router.get("/ops/lift", response_class=HTMLResponse)
def lift_page(settings: SettingsDep) -> HTMLResponse:
    """The latest holdout lift report, or how to make one."""
    path = settings.reports_dir / REPORT_NAME
    if not path.is_file():
        return HTMLResponse(
            _page("carousel holdout lift", "<p>no lift report yet: run <code>carousel report lift</code></p>")
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
        page = render_report(report)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        # A report from another version or a damaged file: say so instead of failing the page.
        message = f"the lift report {path} cannot be shown ({type(exc).__name__}: {exc}); run "
        return HTMLResponse(
            _page(
                "carousel holdout lift",
                f'<p class="note">{_e(message)}<code>carousel report lift</code> again</p>',
            )
        )
    return HTMLResponse(page)
