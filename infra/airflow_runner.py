"""Run a DAG once through Airflow (`airflow dags test`), without a scheduler or API server.

Used by `make demo` and the DAG integration test. Airflow's home is `var/airflow` (SQLite metadata),
migrated on every call (idempotent, a few seconds). The logical date passed is the data interval's end:
with `CronDataIntervalTimetable`, a manual run covers the last whole 15-minute interval before it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class DagRunFailed(RuntimeError):
    """The DAG run ended failed; the message holds the tail of Airflow's output."""


def airflow_env(airflow_home: Path | None = None) -> dict[str, str]:
    """The environment for Airflow CLI calls: project DAGs, no examples, quiet logs, no retries."""
    home = airflow_home or Path(os.environ.get("AIRFLOW_HOME", ROOT / "var" / "airflow"))
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "PYTHONWARNINGS": "ignore::UserWarning",
        "CAROUSEL_DAG_RETRIES": "0",
        "GX_ANALYTICS_ENABLED": "false",
    }


def run_dag_once(
    dag_id: str, interval_end: datetime, *, airflow_home: Path | None = None, timeout_s: int = 1_200
) -> str:
    """`airflow db migrate` then `airflow dags test DAG interval_end`; returns Airflow's output.

    Raises `DagRunFailed` when the run fails (Airflow exits 1).
    """
    airflow = str(Path(sys.executable).parent / "airflow")
    env = airflow_env(airflow_home)
    subprocess.run([airflow, "db", "migrate"], check=True, env=env, capture_output=True, timeout=300)
    print(f"running DAG {dag_id} through Airflow (logical date {interval_end.isoformat()})", flush=True)
    done = subprocess.run(
        [airflow, "dags", "test", dag_id, interval_end.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise DagRunFailed(f"DAG {dag_id} failed (exit {done.returncode}):\n{output[-12000:]}")
    return output
