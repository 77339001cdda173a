"""The `carousel` command line: generate, import, refresh, serve, publish and infra.

Every command validates its input and exits non-zero with a one-line reason when it cannot do its job;
long-running commands print per-stage lines with timings.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import orjson
import pandas as pd
from pydantic import ValidationError
from rich.console import Console

console = Console(stderr=True, highlight=False)


class CommandError(RuntimeError):
    """A command that cannot do its job: printed as one line, exit code 1."""


def _settings() -> Any:
    from configs.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise CommandError(f"invalid configuration CAROUSEL_{field.upper()}: {first['msg']}") from None


def _timestamp(text: str, option: str) -> datetime:
    """An ISO timestamp from the command line; one without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"{option}: {text!r} is not an ISO timestamp (e.g. 2026-11-29T10:15:00+00:00)"
        ) from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _progress(started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:7.1f}s[/dim]  {message}")

    return say


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


# -- generate -----------------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from jobs.ingest.grocery import GrocerySpec, generate_grocery
    from jobs.ingest.synthetic import StoreSpec, generate_store, write_store

    started = time.perf_counter()
    end = pd.Timestamp(args.end, tz="UTC") if args.end else _now().floor("h")
    # Sizes not given come from the preset's own defaults.
    sizes = {k: v for k in ("users", "items", "days", "seed") if (v := getattr(args, k)) is not None}
    say = _progress(started)
    if args.preset == "grocery":
        grocery = GrocerySpec(end=end, **sizes)
        say(
            f"generating a grocery store: {grocery.users} households, {grocery.items} items over {grocery.days} days (seed {grocery.seed})"
        )
        store = generate_grocery(grocery)
    else:
        spec = StoreSpec(end=end, **sizes)
        say(f"generating {spec.users} shoppers, {spec.items} items over {spec.days} days (seed {spec.seed})")
        store = generate_store(spec)
    counts = write_store(store, Path(args.out))
    say(f"wrote {args.out}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


# -- import -------------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from carousel.lake import Lake, file_digest
    from jobs.ingest import adapters

    settings = _settings()
    path = Path(args.path)
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    lake = Lake(settings.lake_dir)
    started = time.perf_counter()
    say = _progress(started)
    digest = file_digest(path)
    now = _now()
    kind = args.kind
    if kind in ("online-retail", "rees46"):
        reader = adapters.read_online_retail if kind == "online-retail" else adapters.read_rees46
        imported = reader(path)
        say(f"read {path}: " + ", ".join(f"{k} {v:,}" for k, v in imported.report.items()))
        # Catalog and users first: they are upserts; the events write is the one that can be skipped.
        results = [lake.upsert_items(imported.items, source=f"{path} (items)")]
        if imported.users is not None:
            results.append(lake.upsert_users(imported.users, source=f"{path} (users)"))
        results.append(lake.append_events(imported.events, now=now, source=str(path), digest=digest))
    else:
        frame = adapters.read_table_file(path)
        if kind == "events":
            results = [lake.append_events(frame, now=now, source=str(path), digest=digest)]
        elif kind == "items":
            results = [lake.upsert_items(frame, source=str(path))]
        else:
            results = [lake.upsert_users(frame, source=str(path))]
    for result in results:
        if result.skipped_reason:
            say(f"{result.table}: skipped, {result.skipped_reason}")
        else:
            say(f"{result.table}: {result.rows:,} rows written to {result.path}")
    return 0


# -- refresh ------------------------------------------------------------------------------------------
def cmd_refresh(args: argparse.Namespace) -> int:
    """Every stage of the refresh DAG in a row, in this process."""
    from jobs.stages.refresh import run_refresh

    settings = _settings()
    interval_end = _timestamp(args.interval_end, "--interval-end") if args.interval_end else datetime.now(UTC)
    interval_start = _timestamp(args.interval_start, "--interval-start") if args.interval_start else None
    started = time.perf_counter()
    result = run_refresh(
        settings,
        interval_end=interval_end,
        interval_start=interval_start,
        mode=args.mode,
        progress=_progress(started),
    )
    published = result.published
    kind = "incremental" if published.kind == "delta" else "full"
    console.print(
        f"published {kind} version {published.version} (run {result.run_id}): "
        f"{published.user_lists:,} personal lists, {published.segment_lists} segment lists "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return 0


# -- retrain ------------------------------------------------------------------------------------------
def cmd_retrain(args: argparse.Namespace) -> int:
    """Every stage of the retrain DAG in a row, in this process."""
    from jobs.stages import RETRAIN
    from jobs.stages.run import StageRun, run_stages, version_for

    settings = _settings()
    interval_end = _timestamp(args.interval_end, "--interval-end") if args.interval_end else datetime.now(UTC)
    run_id = f"retrain__{version_for(interval_end)}"
    started = time.perf_counter()
    job = StageRun(settings, run_id, interval_end, None, "train", _progress(started))
    model = run_stages(RETRAIN, job)["train"].value.model
    console.print(
        f"trained model {model.number} (run {run_id}) in {time.perf_counter() - started:.1f}s; "
        f"out-of-sample figures: {json.dumps(model.evaluation)}"
    )
    return 0


# -- drain-events -------------------------------------------------------------------------------------
def cmd_drain_events(args: argparse.Namespace) -> int:
    from jobs.ingest.drain import DrainError, drain_events

    settings = _settings()
    interval_end = _timestamp(args.interval_end, "--interval-end") if args.interval_end else datetime.now(UTC)
    started = time.perf_counter()
    try:
        result = drain_events(settings, interval_end=interval_end, progress=_progress(started))
    except DrainError as exc:
        raise CommandError(str(exc)) from None
    backlog = result.backlog
    console.print(
        f"drained {result.written:,} events into {len(result.parts)} lake part(s) through stream id "
        f"{result.drained_through or '-'} in {time.perf_counter() - started:.1f}s; left in the stream: "
        f"{backlog.length:,} ({backlog.pending:,} held back for a later interval); "
        f"rejected {result.rejected}, deleted {result.deleted}"
        + (" [the stream's length cap dropped undrained events]" if backlog.lost else "")
    )
    return 0


# -- erase, shopper-token ----------------------------------------------------------------------------
def cmd_erase(args: argparse.Namespace) -> int:
    from jobs.stages.compact import compact_erased

    if not args.compact:
        raise CommandError(
            "erase a shopper with DELETE /v1/users/{id}; `carousel erase --compact` then takes the erased "
            "shoppers out of every data file"
        )
    started = time.perf_counter()
    try:
        result = compact_erased(_settings())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    console.print(
        f"{result.rows_removed:,} rows of {result.erased_shoppers:,} erased shoppers (and "
        f"{result.linked_sessions:,} guest sessions they signed in on) taken out of {len(result.files)} "
        f"files in {time.perf_counter() - started:.1f}s"
    )
    for path in result.files:
        console.print(f"  {path}")
    return 0


def cmd_shopper_token(args: argparse.Namespace) -> int:
    from carousel.rules.identity import MAX_TTL_S, shopper_token

    settings = _settings()
    if settings.shopper_token_secret is None:
        raise CommandError("CAROUSEL_SHOPPER_TOKEN_SECRET is not set: there is nothing to sign tokens with")
    if not 1 <= args.ttl <= MAX_TTL_S:
        raise CommandError(f"--ttl must be between 1 and {MAX_TTL_S} seconds")
    secret = settings.shopper_token_secret.get_secret_value()
    print(shopper_token(args.user_id, secret, expires_at=int(time.time()) + args.ttl))
    return 0


# -- bench --------------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    say = _progress(started)
    if args.what == "serve":
        from carousel.bench.serve import bench_serve

        users = 50_000 if args.users is None else args.users
        if min(args.concurrency, args.duration, args.workers, args.rounds) < 1 or users < 10:
            raise CommandError(
                "--concurrency, --duration, --workers and --rounds must be >= 1 and --users >= 10"
            )
        if args.publish_lists and args.publish_lists < users:
            raise CommandError("--publish-lists must cover the served shoppers: at least --users")
        report = bench_serve(
            concurrency=args.concurrency,
            duration=args.duration,
            users=users,
            workers=args.workers,
            progress=say,
            rounds=args.rounds,
            publish_lists=args.publish_lists,
            profile_dir=Path(args.profile) if args.profile else None,
            hostile=args.hostile,
        )
    else:
        from carousel.bench.batch import bench_batch, local_cores, on_cpus, store_size

        size = store_size(args.preset, args.users, args.items, args.events)
        if size.users < 100 or size.items < 10 or size.events < 1_000:
            raise CommandError("--users >= 100, --items >= 10 and --events >= 1000, please")
        from configs.settings import SPARK_MASTER_PATTERN

        masters = [m.strip() for m in (args.scoring_masters or "").split(";") if m.strip()]
        for master in masters:
            if not re.fullmatch(SPARK_MASTER_PATTERN, master):
                raise CommandError(
                    f"--scoring-masters: {master!r} is not local[N], local[*] or spark://host:port"
                )
            cores = local_cores(master)
            if cores is not None:
                try:
                    # Checked now, not after the full and incremental runs it would have cost.
                    on_cpus(cores)
                except (ValueError, RuntimeError) as exc:
                    raise CommandError(f"--scoring-masters: {master!r}: {exc}") from exc
        report = bench_batch(
            users=size.users,
            items=size.items,
            events=size.events,
            settings=_settings(),
            progress=say,
            scoring_masters=masters,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    say(f"wrote {out}")
    return 0


# -- evaluate -----------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from carousel.schema import validate_events, validate_items
    from jobs.evaluation.baselines import BASELINES, tune_baselines
    from jobs.evaluation.protocol import EvaluationError, Split, run_evaluation
    from jobs.evaluation.published import published_lists
    from jobs.evaluation.ranker import evaluation_ranker, start_spark
    from jobs.evaluation.report import write_report
    from jobs.evaluation.sessions import StateBounds, visitor_tasks
    from jobs.ingest import adapters

    path = Path(args.input)
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    if args.items and args.dataset != "events":
        raise CommandError("--items goes with --dataset events (Online Retail derives its own items)")
    if args.items and not Path(args.items).is_file():
        raise CommandError(f"no such file: {args.items}")
    started = time.perf_counter()
    say = _progress(started)
    if args.dataset == "online-retail":
        imported = adapters.read_online_retail(path)
        events, items = imported.events, imported.items
    else:
        events = validate_events(adapters.read_table_file(path), now=_now(), source=str(path))
        items = None
        if args.items:
            items = validate_items(adapters.read_table_file(Path(args.items)), source=str(args.items))
    load_s = time.perf_counter() - started
    n_items = "no items table" if items is None else f"{len(items):,} items"
    say(f"read {path}: {len(events):,} events, {n_items} ({load_s:.1f}s)")
    models = {**BASELINES, "ranker": evaluation_ranker}

    def tune(events: pd.DataFrame, items: pd.DataFrame | None, split: Split) -> dict[str, Any]:
        start_spark()  # the ranker's JVM starts while the baselines are tuned, once the run goes ahead
        return tune_baselines(events, items, split, progress=say)

    try:
        report = run_evaluation(
            events,
            items,
            models,
            dataset=args.dataset,
            test_days=args.test_days,
            val_days=args.val_days,
            folds=args.folds,
            tune=tune,
            extra_tasks=visitor_tasks(published_lists, bounds=StateBounds.of(_settings())),
            progress=say,
        )
    except EvaluationError as exc:
        raise CommandError(str(exc)) from None
    report["input"] = str(path)
    report["timings_s"] = {"load": round(load_s, 3), **report["timings_s"]}
    report["timings_s"]["total"] = round(time.perf_counter() - started, 3)
    paths = write_report(report, Path(args.out))
    # The ops page shows the last evaluation: keep a copy where it looks.
    settings = _settings()
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    copy = settings.reports_dir / "evaluation.json.tmp"
    copy.write_text(paths["json"].read_text())
    copy.replace(settings.reports_dir / "evaluation.json")
    for task, per_model in report["tasks"].items():
        best = max(per_model, key=lambda name: per_model[name]["ndcg@10"])
        say(
            f"{task}: best NDCG@10 {best} {per_model[best]['ndcg@10']:.4f} ({per_model[best]['users']:,} shoppers)"
        )
    if len(report["folds"]) > 1:
        for task, entry in report["folds_summary"]["tasks"].items():
            ratio = entry.get("ranker_vs_best_other")
            if ratio and ratio["mean_ratio"] is not None:
                low, high = ratio["ci"]
                per_fold = ", ".join(
                    "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x" for r in ratio["folds"]
                )
                say(
                    f"{task}: ranker / best other model over {len(ratio['folds'])} folds: mean "
                    f"{ratio['mean_ratio']:.2f}x [{low:.2f}, {high:.2f}] (per fold {per_fold})"
                )
    say(f"wrote {paths['json']}, {paths['md'].name} and {paths['png'].name}")
    return 0


# -- serve --------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.auth import MissingTokens, check_tokens_configured
    from serving.http_protocol import JsonErrorsHttpToolsProtocol

    try:
        # Refuse to start on a bad configuration, or with the protected routes open, before binding.
        check_tokens_configured(_settings())
    except MissingTokens as exc:
        raise CommandError(str(exc)) from None
    if args.workers < 1:
        raise CommandError(f"--workers must be at least 1, got {args.workers}")
    config: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "http": JsonErrorsHttpToolsProtocol,
        # The browsers' rate limit counts by client address: behind these proxies, X-Forwarded-For's.
        "forwarded_allow_ips": _settings().forwarded_allow_ips,
    }
    if args.workers > 1 and sys.platform.startswith("linux"):
        from serving.workers import serve_workers

        # A listening socket per worker: the kernel spreads connections over them (serving/workers.py).
        try:
            return serve_workers(
                "serving.main:app", host=args.host, port=args.port, workers=args.workers, **config
            )
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    uvicorn.run("serving.main:app", host=args.host, port=args.port, workers=args.workers, **config)
    return 0


# -- publish ------------------------------------------------------------------------------------------
def cmd_publish(args: argparse.Namespace) -> int:
    from carousel.cache.client import sync_client
    from carousel.cache.versions import live_version, published_versions, read_meta
    from jobs.publishing.retention import rollback
    from jobs.stages.run import history

    settings = _settings()
    client = sync_client(settings)
    if args.action == "rollback":
        rolled_from, now_live = rollback(client)
        console.print(f"rolled back: {rolled_from} -> {now_live} is live")
        return 0
    if args.action == "migrate":
        from jobs.publishing.migrate import migrate_keys

        done = migrate_keys(client)
        console.print(
            f"moved to the current key layout: {done.consents} consent records, "
            f"{done.shopper_hashes} shoppers' list hashes, {done.version_keys} version keys"
        )
        return 0
    live = live_version(client)
    versions = published_versions(client)
    runs = history(settings).recent(20)
    previous = [v for v in versions if v != live]
    status: dict[str, Any] = {"live": live, "previous": previous, "runs": runs}
    meta = (read_meta(client, live) or {}) if live else {}
    status["live_meta"] = meta
    if args.json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    model = (meta.get("model") or {}).get("number", "-")
    console.print(
        f"live: {live or '(none)'}"
        + (f" ({meta.get('kind')} on base {meta.get('base')}, model {model})" if meta else "")
    )
    console.print(f"previous: {', '.join(previous) or '(none)'}")
    for run in runs:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in run.get("stages", {}).items())
        console.print(
            f"  {run['run_id']}: {run.get('status')} mode={run.get('mode', '-')} "
            f"model={(run.get('model') or {}).get('number', '-')} "
            f"version={run.get('published_version') or '-'} {stages}"
        )
    return 0


# -- report -------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    """`report lift`: treatment vs holdout conversion and revenue (`jobs.evaluation.lift`) as JSON and a
    summary."""
    from carousel.lake import Lake
    from jobs.evaluation.lift import (
        LiftError,
        last_event_time,
        lift_report,
        read_audiences,
        read_events,
        summary_tables,
        write_report,
    )

    settings = _settings()
    start = pd.Timestamp(_timestamp(args.start, "--start")) if args.start else None
    end = pd.Timestamp(_timestamp(args.end, "--end")) if args.end else None
    if args.email_window_days < 1:
        raise CommandError(f"--email-window-days must be at least 1, not {args.email_window_days}")
    event_files = Lake(settings.lake_dir).event_files()
    newest = last_event_time(event_files)
    if newest is None:
        raise CommandError(f"the lake at {settings.lake_dir} holds no events: import some first")
    # Default window: the 30 whole days that end at the midnight after the newest event.
    end = end if end is not None else newest.floor("D") + pd.Timedelta(days=1)
    start = start if start is not None else end - pd.Timedelta(days=30)
    if start >= end:
        raise CommandError(f"start {start:%Y-%m-%dT%H:%M:%SZ} must be before end {end:%Y-%m-%dT%H:%M:%SZ}")
    # Email conversions of triggers near the end happen up to the email window after it.
    events = read_events(event_files, start=start, end=end + pd.Timedelta(days=args.email_window_days))
    audience_files = sorted(Path(settings.var_dir).glob("audiences/*/*.parquet"))
    try:
        report = lift_report(
            events,
            read_audiences(audience_files),
            salt=settings.holdout_salt,
            holdout_percent=settings.holdout_percent,
            start=start,
            end=end,
            email_window_days=args.email_window_days,
        )
    except LiftError as exc:
        raise CommandError(str(exc)) from None
    report = {
        "generated_at": _now().isoformat(),
        **report,
        "inputs": {
            "lake_dir": str(settings.lake_dir),
            "event_rows_read": len(events),
            "audience_files": [str(p) for p in audience_files],
        },
    }
    out = write_report(report, Path(args.out) if args.out else settings.reports_dir / "lift.json")
    window = report["window"]
    console.print(
        f"holdout lift {window['start'][:16]} to {window['end'][:16]} UTC, {settings.holdout_percent:g}% holdout"
    )
    for table in summary_tables(report):
        console.print(table)
    if not report["email"]["available"]:
        console.print(f"email: {report['email']['note']}")
    console.print(f"wrote {out}")
    return 0


# -- submit -------------------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    """Run one pipeline stage (what the DAG calls). The Spark stages (`jobs.stages.SPARK_STAGES`) run as
    a Spark application on CAROUSEL_SPARK_MASTER: on the store's warm stage runner when
    CAROUSEL_STAGE_RUNNER is on (`infra.stage_runner`; training always gets an application of its own),
    else through spark-submit. The others use no Spark and run in this process (a JVM start saved per
    stage)."""
    import subprocess

    import jobs.entry
    from jobs.stages import SPARK_STAGES

    settings = _settings()
    _timestamp(args.interval_end, "--interval-end")
    stage_args = [
        args.stage,
        "--run-id",
        args.run_id,
        "--interval-end",
        args.interval_end,
        "--mode",
        args.mode,
    ]
    if args.interval_start:
        _timestamp(args.interval_start, "--interval-start")
        stage_args += ["--interval-start", args.interval_start]
    if args.stage not in SPARK_STAGES:
        return jobs.entry.main(stage_args)
    if settings.stage_runner and args.stage != "train" and args.mode != "train":
        from infra.stage_runner import run_on_runner

        return run_on_runner(settings, stage_args)
    command = jobs.entry.spark_submit_command(settings, jobs.entry.__file__, stage_args)
    return subprocess.run(command, env=jobs.entry.spark_submit_env(), check=False).returncode


# -- infra --------------------------------------------------------------------------------------------
def cmd_infra(args: argparse.Namespace) -> int:
    from infra import prereqs, redis_server, stage_runner

    settings = _settings()
    var_dir = Path(settings.var_dir)
    if args.action == "down":
        stopped = redis_server.stop_managed(var_dir)
        console.print("managed Redis stopped" if stopped else "managed Redis was not running")
        ran = stage_runner.stop_runner(settings)
        console.print("stage runner stopped" if ran else "no stage runner was running")
        return 0
    if prereqs.main() != 0:
        return 1
    url = redis_server.ensure_redis(var_dir)
    if args.print_url:
        print(url)
    else:
        console.print(f"Redis reachable at {url}")
    return 0


# The `carousel` subcommands' parsers (argparse's own type for them).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carousel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_pipeline_commands(sub)
    _add_service_commands(sub)
    return parser


def _fold_count(value: str) -> int:
    """`--folds`: an integer of at least 1 (argparse names the option in its error)."""
    try:
        folds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}") from None
    if folds < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {folds}")
    return folds


def _add_data_commands(sub: Commands) -> None:
    """The commands of the store's data: generate, import, evaluate, report."""
    gen = sub.add_parser(
        "generate",
        help="write the synthetic store (events, items, users) as Parquet",
        description="Write a synthetic store as canonical Parquet. Presets: 'general' (default: a "
        "general/fashion-like shop with browsing sessions, carts and anonymous visitors; 2,000 "
        "shoppers, 500 items, 60 days) and 'grocery' (households on weekly trips re-buying staples on "
        "item-specific cycles, purchases only; 2,500 households, 60,000 items, 365 days). "
        "--users/--items/--days/--seed override the preset's sizes.",
    )
    gen.add_argument("--out", required=True)
    gen.add_argument("--preset", choices=["general", "grocery"], default="general", help="kind of store")
    gen.add_argument("--users", type=int, help="shoppers (households); default: the preset's")
    gen.add_argument("--items", type=int, help="catalogue size; default: the preset's")
    gen.add_argument("--days", type=int, help="length of the period; default: the preset's")
    gen.add_argument("--seed", type=int, help="random seed; default 7")
    gen.add_argument("--end", help="last moment of the data (ISO date, UTC); default: this hour")
    gen.set_defaults(func=cmd_generate)

    imp = sub.add_parser("import", help="validate a file and add it to the lake")
    imp.add_argument("kind", choices=["online-retail", "rees46", "events", "items", "users"])
    imp.add_argument("path")
    imp.set_defaults(func=cmd_import)

    ev = sub.add_parser(
        "evaluate", help="offline evaluation of the baselines and the ranker (temporal split, or --folds K)"
    )
    ev.add_argument("--dataset", required=True, choices=["online-retail", "events"])
    ev.add_argument("--input", required=True, help="Online Retail CSV, or canonical events (CSV or Parquet)")
    ev.add_argument("--items", help="canonical items (CSV or Parquet) for --dataset events")
    ev.add_argument("--out", required=True, help="report JSON; a .md summary and a .png plot go beside it")
    ev.add_argument("--test-days", type=int, default=30, help="length of the test period (the last days)")
    ev.add_argument("--val-days", type=int, default=30, help="validation window before the test period")
    ev.add_argument(
        "--folds",
        type=_fold_count,
        default=1,
        metavar="K",
        help="rolling origin: K consecutive test windows, the last one ending with the data, each tuned on "
        "the validation window before it and trained on everything earlier; the report's split and tasks "
        "are the last fold's, `folds` lists every fold and `folds_summary` the mean with a 95%% interval "
        "of the ranker's ratio to the best other model (default 1: the single split)",
    )
    ev.set_defaults(func=cmd_evaluate)

    rep = sub.add_parser("report", help="reports on live traffic: holdout lift (storefront and email)")
    rep.add_argument("action", choices=["lift"])
    rep.add_argument(
        "--start", help="window start (ISO timestamp, UTC if no zone); default: 30 days before the end"
    )
    rep.add_argument(
        "--end", help="window end, exclusive (ISO timestamp); default: the midnight after the newest event"
    )
    rep.add_argument("--out", help="report JSON; default: <var_dir>/reports/lift.json")
    rep.add_argument(
        "--email-window-days", type=int, default=7, help="days after an email's trigger a purchase counts"
    )
    rep.set_defaults(func=cmd_report)


def _add_pipeline_commands(sub: Commands) -> None:
    """The commands of the pipeline: refresh, retrain, drain-events, submit, publish, erase, shopper-token."""
    from jobs.stages import MODES, STAGES

    ref = sub.add_parser(
        "refresh",
        help="one pipeline run: every stage of the refresh DAG (drain, check inputs, compute, validate, "
        "publish, audiences)",
    )
    ref.add_argument(
        "--mode",
        choices=["full", "incremental", "auto"],
        default="full",
        help="full: retrain the models and score every shopper; incremental: score the shoppers active in "
        "the interval with the newest model and publish them on top of the live version; auto: "
        "incremental when a model and a live version exist",
    )
    ref.add_argument("--interval-end", help="data interval end (ISO timestamp); default: now")
    ref.add_argument(
        "--interval-start", help="data interval start (ISO timestamp); default: 15 minutes before the end"
    )
    ref.set_defaults(func=cmd_refresh)

    ret = sub.add_parser(
        "retrain", help="the nightly retrain: a new numbered model (ALS, co-visitation, ranker), no lists"
    )
    ret.add_argument("--interval-end", help="data interval end (ISO timestamp); default: now")
    ret.set_defaults(func=cmd_retrain)

    drn = sub.add_parser(
        "drain-events", help="move the events the API accepted from Redis into the lake (exactly once)"
    )
    drn.add_argument(
        "--interval-end", help="move events up to this time (ISO timestamp); later ones wait; default: now"
    )
    drn.set_defaults(func=cmd_drain_events)

    sbm = sub.add_parser("submit", help="run one pipeline stage with spark-submit (used by the DAG)")
    sbm.add_argument("stage", choices=STAGES)
    sbm.add_argument("--run-id", required=True)
    sbm.add_argument("--interval-end", required=True, help="the run's data interval end (ISO timestamp)")
    sbm.add_argument("--interval-start", help="the run's data interval start (ISO timestamp)")
    sbm.add_argument("--mode", choices=MODES, default="full", help="compute mode")
    sbm.set_defaults(func=cmd_submit)

    pub = sub.add_parser(
        "publish",
        help="what is live; roll back; migrate a Redis written by an older carousel to the key layout",
    )
    pub.add_argument("action", choices=["status", "rollback", "migrate"])
    pub.add_argument("--json", action="store_true")
    pub.set_defaults(func=cmd_publish)

    era = sub.add_parser(
        "erase", help="--compact: take erased shoppers out of every data file (what the nightly stage does)"
    )
    era.add_argument("--compact", action="store_true", help="rewrite the files that still hold them")
    era.set_defaults(func=cmd_erase)

    tok = sub.add_parser(
        "shopper-token",
        help="a signed shopper token for USER_ID, as the store's backend issues for a signed-in shopper",
    )
    tok.add_argument("user_id")
    tok.add_argument("--ttl", type=int, default=3600, help="seconds the token lives (at most 7 days)")
    tok.set_defaults(func=cmd_shopper_token)


def _add_service_commands(sub: Commands) -> None:
    """The commands of the API, the benchmarks and the infrastructure: serve, bench, infra."""
    srv = sub.add_parser("serve", help="the HTTP API")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1)
    srv.set_defaults(func=cmd_serve)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: the API under load, the pipeline at size",
        description="serve: the API under load. batch: the synthetic store (90 days) through the full "
        "pipeline and one 15-minute incremental run, with stage timings, peak memory and Redis bytes "
        "per list. Batch presets: small = 20,000 shoppers, 2,000 items, 1M events; medium = 200,000 "
        "shoppers, 20,000 items, 5M events; large = 1,000,000 shoppers, 100,000 items, 20M events. "
        "--users, --items and --events override the preset's figure.",
    )
    bench.add_argument("what", choices=["serve", "batch"])
    bench.add_argument(
        "--preset",
        choices=["small", "medium", "large"],
        default="small",
        help="batch: store size (small 20k/2k/1M, medium 200k/20k/5M, large 1M/100k/20M "
        "shoppers/items/events)",
    )
    bench.add_argument("--out", required=True, help="the report JSON")
    bench.add_argument("--concurrency", type=int, default=16)
    bench.add_argument("--duration", type=int, default=20, help="seconds of load per target")
    bench.add_argument(
        "--users", type=int, help="shoppers (serve: with a stored list, default 50,000; batch: the preset's)"
    )
    bench.add_argument("--items", type=int, help="batch: catalog size (default: the preset's)")
    bench.add_argument(
        "--events", type=int, help="batch: this many events within about 1%% (default: the preset's)"
    )
    bench.add_argument("--workers", type=int, default=2, help="uvicorn workers of the API and the baseline")
    bench.add_argument("--rounds", type=int, default=2, help="serve: alternated rounds of route and baseline")
    bench.add_argument(
        "--publish-lists",
        type=int,
        default=0,
        help="serve: also measure the route while a version of this many lists is published (e.g. 1000000)",
    )
    bench.add_argument(
        "--profile", help="serve: a folder for py-spy profiles of the route and the baseline (round 1)"
    )
    bench.add_argument(
        "--hostile",
        action="store_true",
        help="serve: one more round of the route while a body of junk events as large as the events route "
        "reads (its size cap) is posted in a loop, with "
        "health checks probed meanwhile",
    )
    bench.add_argument(
        "--scoring-masters",
        help="batch: after the runs, rescore every shopper on each of these Spark masters, separated by ';' "
        "(e.g. 'local[1];local[2]' or a cluster's spark://host:port), for the scoring rate per core; "
        "a local[N] rescore runs on N CPUs only, its JVM and Python workers included",
    )
    bench.set_defaults(func=cmd_bench)

    inf = sub.add_parser("infra", help="check Java and make sure Redis is reachable (starting it if needed)")
    inf.add_argument("action", choices=["up", "down"])
    inf.add_argument("--print-url", action="store_true", help="print only the Redis URL on stdout")
    inf.set_defaults(func=cmd_infra)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from carousel.models import ModelStoreError
    from carousel.schema import SchemaError
    from jobs.ingest.drain import DrainError
    from jobs.publishing import PublishError
    from jobs.stages.run import PipelineError

    try:
        code: int = args.func(args)
        return code
    except (
        CommandError,
        SchemaError,
        DrainError,
        PipelineError,
        PublishError,
        ModelStoreError,
    ) as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
