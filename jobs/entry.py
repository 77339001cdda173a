"""The Spark application entry point: one pipeline stage per `spark-submit`.

    spark-submit --master <CAROUSEL_SPARK_MASTER> jobs/entry.py STAGE --run-id ID --interval-end ISO \
        [--interval-start ISO] [--mode auto|full|rescore|incremental|train]

`carousel submit STAGE ...` builds that command from the settings (and runs the stages that need no
Spark in its own process); the Airflow DAGs run it, so the same DAGs work on `local[*]` and on a
cluster. Stages hand over through the run's folder, so each submit is independent and can be retried
alone. The stages: `jobs.stages`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from jobs.stages import MODES, STAGES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/entry.py")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--interval-end", required=True, type=datetime.fromisoformat)
    parser.add_argument("--interval-start", type=datetime.fromisoformat)
    parser.add_argument("--mode", choices=MODES, default="full")
    args = parser.parse_args(argv)

    from configs.settings import get_settings
    from jobs.stages.run import StageRun, run_stage

    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {message}", flush=True)

    job = StageRun(
        get_settings(),
        run_id=args.run_id,
        interval_end=args.interval_end,
        interval_start=args.interval_start,
        mode=args.mode,
        progress=say,
    )
    run_stage(args.stage, job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
