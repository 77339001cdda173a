"""The Spark application entry point: one pipeline stage per `spark-submit`.

    spark-submit --master <CAROUSEL_SPARK_MASTER> jobs/entry.py STAGE --run-id ID --interval-end ISO \
        [--interval-start ISO] [--mode auto|full|incremental]

`carousel submit STAGE ...` builds that command from the settings; the Airflow DAG runs it, so the same
DAG works on `local[*]` and on a cluster. Stages hand over through the run's folder (see
`jobs/pipeline.py`), so each submit is independent and can be retried alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime

# `train` is the compute stage in train mode (the nightly retrain): a new numbered model, no lists.
# `drain_events` moves the events the API accepted from Redis into the lake (jobs/drain.py).
# `audiences` refreshes the marketing audiences from the lake after the lists are live (jobs/audiences.py).
STAGES = ("drain_events", "check_inputs", "compute", "train", "validate", "publish", "audiences")
# The stages that run Spark jobs; the others run without a Spark session.
SPARK_STAGES = ("check_inputs", "compute", "train")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/entry.py")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--interval-end", required=True, type=datetime.fromisoformat)
    parser.add_argument("--interval-start", type=datetime.fromisoformat)
    parser.add_argument("--mode", choices=("auto", "full", "rescore", "incremental", "train"), default="full")
    args = parser.parse_args(argv)

    from configs.settings import get_settings

    settings = get_settings()
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {args.stage}: {message}", flush=True)

    if args.stage == "drain_events":
        from jobs.drain import drain_events

        drained = drain_events(settings, interval_end=args.interval_end, progress=say)
        say(
            f"{drained.written:,} events into the lake, through stream id {drained.drained_through or '-'}; "
            f"{drained.backlog.length:,} left in the stream, {drained.rejected} rejected, {drained.deleted} deleted"
            + (" (the stream's length cap dropped undrained events)" if drained.backlog.lost else "")
        )
    elif args.stage == "audiences":
        from jobs.audiences import build_audiences

        built = build_audiences(settings, run_id=args.run_id, interval_end=args.interval_end)
        say(
            "audiences: "
            + ", ".join(
                f"{c} {n['send']:,} to send + {n['held_out']:,} held out" for c, n in built.counts.items()
            )
        )
    elif args.stage == "check_inputs":
        # Not the pipeline's modules (LightGBM, lleaves, implicit: about 2 s of imports) for the gate.
        from jobs.input_check import check_inputs

        verdict = check_inputs(settings, run_id=args.run_id, interval_end=args.interval_end)
        say(f"inputs passed ({verdict['rows']:,} events)")
    elif args.stage in ("compute", "train"):
        from jobs import pipeline

        manifest = pipeline.compute_lists(
            settings,
            run_id=args.run_id,
            interval_end=args.interval_end,
            interval_start=args.interval_start,
            mode="train" if args.stage == "train" else args.mode,
            progress=say,
        )
        lists = manifest["counts"].get("user_lists")
        say(
            f"{manifest['mode']} run with model {manifest['model']['number']}"
            + (f": {lists:,} personal lists" if lists is not None else "")
        )
    elif args.stage == "validate":
        from jobs import pipeline

        pipeline.validate_lists(settings, run_id=args.run_id, progress=say)
    else:
        from jobs import pipeline

        result = pipeline.publish_lists(settings, run_id=args.run_id, progress=say)
        say(f"version {result.version} {'is live' if result.switched else 'was already live'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
