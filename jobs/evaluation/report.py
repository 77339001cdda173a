"""The evaluation report's files: the JSON of the contract, a Markdown summary and a plot beside it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson


def write_report(report: Mapping[str, Any], out_path: Path | str) -> dict[str, Path]:
    """Write the report as JSON, with a Markdown summary and a plot beside it.

    Parameters
    ----------
    report:
        `run_evaluation` output.
    out_path:
        The JSON file; ``<stem>.md`` and ``<stem>.png`` go next to it. Parent folders are created.

    Returns
    -------
    dict
        ``{"json": path, "md": path, "png": path}``.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    md = out.with_suffix(".md")
    png = out.with_suffix(".png")
    md.write_text(_markdown(report, png.name), encoding="utf-8")
    _plot(report, png)
    return {"json": out, "md": md, "png": png}


def _best(per_model: Mapping[str, Mapping[str, Any]], exclude: str | None = None) -> tuple[str, float]:
    candidates = {m: float(v["ndcg@10"]) for m, v in per_model.items() if m != exclude and v}
    if not candidates:
        return "-", 0.0
    name = max(candidates, key=lambda m: candidates[m])
    return name, candidates[name]


def _margin(value: float, reference: float) -> str:
    if reference <= 0:
        return "n/a"
    return f"{(value / reference - 1.0) * 100:+.1f}%"


def _markdown(report: Mapping[str, Any], png_name: str) -> str:
    split = report["split"]
    lines = [
        f"# Offline evaluation: {report['dataset']}",
        "",
        f"- training data: everything before **{split['train_end']}**",
        f"- validation window (tuning): [{split.get('val_start', '?')}, {split['test_start']})",
        f"- test window: [{split['test_start']}, {split['test_end']})",
    ]
    stats = report.get("targets", {})
    if stats:
        lines.append(
            f"- scored shoppers: {stats['all']['users']:,} in `all`, {stats['new_items']['users']:,} in "
            f"`new_items`; {stats['cold_buyers_excluded']:,} buyers without history before the cutoff and "
            f"{stats['anonymous_purchases_excluded']:,} anonymous purchases are not scored (cold start is "
            "served by segment lists)"
        )
    lines += _visitor_lines(stats)
    lines += [
        "",
        "Metrics are means over scored shoppers (sessions in `sessions`); relevance is binary (bought in "
        "the test window; in `sessions`, touched in the session's second half).",
        "",
    ]
    for task, per_model in report["tasks"].items():
        lines += [f"## Task `{task}`", "", "| model | NDCG@10 | Recall@10 | MAP@12 | coverage@10 | users |"]
        lines.append("|---|---:|---:|---:|---:|---:|")
        best_name, _ = _best(per_model)
        for name, m in per_model.items():
            label = f"**{name}**" if name == best_name else name
            lines.append(
                f"| {label} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['map@12']:.4f} | "
                f"{m['coverage@10']:.3f} | {m['users']:,} |"
            )
        best_name, best_value = _best(per_model)
        lines += ["", f"Best model: **{best_name}** (NDCG@10 {best_value:.4f})."]
        if "ranker" in per_model and per_model["ranker"]:
            other, other_value = _best(per_model, exclude="ranker")
            ranker = float(per_model["ranker"]["ndcg@10"])
            lines.append(
                f"Ranker vs the best other model ({other}, {other_value:.4f}): "
                f"**{_margin(ranker, other_value)}** on NDCG@10."
            )
        lines += _against_bestsellers(per_model)
        lines.append("")
    lines += _fold_lines(report)
    deciles = report.get("deciles", {})
    if deciles:
        lines += [
            f"## NDCG@10 by shopper activity decile (by {report.get('deciles_by', 'activity')}; 1 = least active)",
            "",
        ]
        for task, per_model in deciles.items():
            models = list(per_model)
            if not models:
                continue
            rows = per_model[models[0]]
            lines += [f"### `{task}`", "", "| decile | activity | users | " + " | ".join(models) + " |"]
            lines.append("|---:|---:|---:|" + "---:|" * len(models))
            for i, row in enumerate(rows):
                values = " | ".join(f"{per_model[m][i]['ndcg@10']:.4f}" for m in models)
                activity = f"{row.get('activity_min', '')}–{row.get('activity_max', '')}"
                lines.append(f"| {row['decile']} | {activity} | {row['users']:,} | {values} |")
            if "ranker" in per_model and "als" in per_model:
                ratios = [
                    _margin(r["ndcg@10"], a["ndcg@10"])
                    for r, a in zip(per_model["ranker"], per_model["als"], strict=True)
                ]
                lines += ["", "Ranker vs ALS per decile: " + ", ".join(ratios)]
            lines.append("")
    tuned = report.get("tuned") or {}
    if tuned:
        lines += ["## Hyper-parameters chosen on the validation window", ""]
        for model, params in tuned.items():
            if model != "new_items":
                lines.append(f"- `{model}`: `{orjson.dumps(params).decode()}`")
        for model, params in (tuned.get("new_items") or {}).items():
            lines.append(f"- `{model}` in `new_items`: `{orjson.dumps(params).decode()}`")
        lines.append("")
    timings = report.get("timings_s") or {}
    if timings:
        lines += ["## Timings (seconds)", "", "| stage | s |", "|---|---:|"]
        lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()]
        lines.append("")
    lines += [f"![NDCG@10 per model and by activity decile]({png_name})", ""]
    return "\n".join(lines)


def _fold_lines(report: Mapping[str, Any]) -> list[str]:
    """Every fold's NDCG@10 per model and the mean, and the ranker's ratio to the best other model with
    its interval, per task (nothing for a report without folds)."""
    summary = report.get("folds_summary")
    folds = report.get("folds") or []
    if not summary or not folds:
        return []
    interval = summary.get("interval", {})
    level = f"{float(interval.get('confidence', 0.95)) * 100:g}%"
    lines = [
        f"## Folds: {len(folds)} consecutive test windows (the tables above are the last)",
        "",
        "Each fold is tuned on the window before its test window and trained on everything before that. "
        f"Ratio: the ranker's NDCG@10 over the best other model's; in brackets its {level} interval "
        f"({interval.get('method', 'bootstrap')}, {interval.get('resamples', '?')} resamples).",
        "",
    ]
    for task, entry in summary["tasks"].items():
        models = list(entry["mean"])
        ratio = entry.get("ranker_vs_best_other")
        lowest = entry.get("lowest_decile_vs_als")
        header = (
            "| test window | "
            + " | ".join(models)
            + (" | ranker / best other |" if ratio else " |")
            + (" lowest decile, ranker / ALS |" if lowest else "")
        )
        columns = len(models) + (1 if ratio else 0) + (1 if lowest else 0)
        lines += [f"### `{task}`", "", header, "|---|" + "---:|" * columns]
        for i, fold in enumerate(folds):
            window = f"{fold['split']['test_start'][:10]} – {fold['split']['test_end'][:10]}"
            values = " | ".join(f"{fold['tasks'][task][m]['ndcg@10']:.4f}" for m in models)
            extra = ""
            if ratio:
                row = ratio["folds"][i]
                extra = f" {_ratio_text(row['ratio'], row['ci'])} vs {row['best_other']} |"
            if lowest:
                worst = lowest[i]
                extra += f" {_ratio_text(worst['ratio'], worst['ci'])} (decile {worst['decile']}) |"
            lines.append(f"| {window} | {values} |{extra}")
        means = " | ".join(f"{entry['mean'][m]['ndcg@10']:.4f}" for m in models)
        extra = f" **{_ratio_text(ratio['mean_ratio'], ratio['ci'])}** |" if ratio else ""
        extra += " |" if lowest else ""
        lines += [f"| **mean** | {means} |{extra}", ""]
    return lines


def _ratio_text(ratio: float | None, ci: list[float | None]) -> str:
    if ratio is None:
        return "n/a"
    low, high = ci
    return f"{ratio:.2f}x" + (f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else "")


def _visitor_lines(stats: Mapping[str, Any]) -> list[str]:
    """What the visitor tasks scored, when the report has them."""
    lines = []
    sessions = stats.get("sessions")
    if sessions:
        lines.append(
            f"- `sessions`: {sessions['sessions']:,} of the {sessions['anonymous_sessions']:,} sessions without a "
            f"known shopper that start in the test window touch at least 4 items (median "
            f"{sessions['given_items_median']:g} given); served from {_sources(sessions.get('served_from'))}"
        )
    newcomers = stats.get("new_shoppers")
    if newcomers:
        lines.append(
            f"- `new_shoppers`: {newcomers['users']:,} of the {newcomers['first_seen']:,} shoppers first seen in the "
            f"test window bought there; served from {_sources(newcomers.get('served_from'))}"
        )
    return lines


def _sources(counts: Mapping[str, int] | None) -> str:
    """Segment kinds and how often each was served, most often first."""
    if not counts:
        return "no segment"
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _against_bestsellers(per_model: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each visitor model's NDCG@10 as a multiple of the global bestsellers'."""
    reference = float((per_model.get("bestsellers") or {}).get("ndcg@10", 0.0))
    if reference <= 0:
        return []
    ratios = [
        f"{name} **x{float(m['ndcg@10']) / reference:.2f}**"
        for name, m in per_model.items()
        if name != "bestsellers" and m
    ]
    return [f"Against bestsellers on NDCG@10: {', '.join(ratios)}."] if ratios else []


def _plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    # Only the shoppers' tasks have activity deciles (the visitor tasks have no history to cut by).
    decile_tasks = [t for t in tasks if report.get("deciles", {}).get(t)]
    models = list(dict.fromkeys(m for task in tasks for m in report["tasks"][task]))
    colors = {model: f"C{i % 10}" for i, model in enumerate(models)}
    ratios = {
        task: entry["ranker_vs_best_other"]
        for task, entry in (report.get("folds_summary") or {}).get("tasks", {}).items()
        if entry.get("ranker_vs_best_other")
    }
    panels = 1 + len(decile_tasks) + (1 if ratios else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    # One group of bars per task, holding only that task's models.
    x, ticks, shown = 0.0, [], set()
    for task in tasks:
        per_model = report["tasks"][task]
        start = x
        for model, figures in per_model.items():
            label = None if model in shown else model
            shown.add(model)
            ax.bar(x, float(figures.get("ndcg@10", 0.0)), 0.8, color=colors[model], label=label)
            x += 1.0
        ticks.append((start + x - 1.0) / 2)
        x += 1.0
    ax.set_xticks(ticks, tasks)
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"{report['dataset']}: NDCG@10 per model")
    ax.legend(fontsize="small")
    for ax, task in zip(axes[1 : 1 + len(decile_tasks)], decile_tasks, strict=True):
        for model in models:
            rows = report["deciles"][task].get(model, [])
            if rows:
                ax.plot(
                    [r["decile"] for r in rows],
                    [r["ndcg@10"] for r in rows],
                    marker="o",
                    label=model,
                    color=colors[model],
                )
        ax.set_xlabel(f"activity decile (by {report.get('deciles_by', 'activity')})")
        ax.set_ylabel("NDCG@10")
        ax.set_title(f"{task}: NDCG@10 by activity decile")
        ax.set_xticks(range(1, 11))
        ax.grid(alpha=0.3)
    if ratios:
        _plot_fold_ratios(axes[-1], ratios)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_fold_ratios(ax: Any, ratios: Mapping[str, Mapping[str, Any]]) -> None:
    """The ranker's ratio to the best other model per fold with its interval, and the mean as a line."""
    for i, (task, ratio) in enumerate(ratios.items()):
        rows = [(n, r) for n, r in enumerate(ratio["folds"], start=1) if r["ratio"] is not None]
        if not rows:
            continue
        x = np.array([n for n, _ in rows], dtype=float) + (i - (len(ratios) - 1) / 2) * 0.15
        y = np.array([r["ratio"] for _, r in rows])
        low = np.array([r["ci"][0] if r["ci"][0] is not None else r["ratio"] for _, r in rows])
        high = np.array([r["ci"][1] if r["ci"][1] is not None else r["ratio"] for _, r in rows])
        ax.errorbar(x, y, yerr=[y - low, high - y], fmt="o", capsize=3, color=f"C{i}", label=task)
        if ratio["mean_ratio"] is not None:
            ax.axhline(ratio["mean_ratio"], color=f"C{i}", linestyle="--", alpha=0.6, label=f"{task} mean")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(1, 1 + max(len(r["folds"]) for r in ratios.values())))
    ax.set_xlabel("fold (test window, oldest first)")
    ax.set_ylabel("ranker NDCG@10 / best other model's")
    ax.set_title("ranker vs best other model per fold")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
