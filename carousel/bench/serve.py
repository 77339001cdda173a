"""`carousel bench serve`: the API under a realistic load, against its own baseline, on this machine.

What it does, all by itself and torn down afterwards:

1. starts a private redis-server and publishes a synthetic version (`--users` shoppers with 30-item
   lists, country and global segment lists, similar items for every item);
2. starts the API (`carousel serve`, `--workers`) and the baseline, a bare FastAPI route returning one
   Redis GET (`carousel/bench/baseline.py`), each in its own uvicorn process;
3. gives a tenth of the shoppers carts and recent purchases through `POST /v1/events`, so the overlay
   does real work;
4. drives each with `wrk` in its own process (installed from Debian when missing) over a mix of
   requests: 70% known shoppers, 10% shoppers with carts and purchases, 20% anonymous visitors with a
   country; then `redis-benchmark` GET at the same concurrency.

It writes the contract's JSON (`rps`, `p50_ms`, `p99_ms`, `errors`, the baseline's figures,
`redis_get_rps`) plus the ratio to the baseline and the setup, and prints a table.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import redis

from infra.redis_server import free_port, start_server, stop_server
from jobs.publish import publish_version

Progress = Callable[[str], None]
TOKEN = "bench-admin-token-0123456789"
COUNTRIES = ("Germany", "France", "United Kingdom", "Spain", "Italy")

_WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local i = math.random(1, #paths)
request = function()
  i = i + 1
  if i > #paths then i = 1 end
  return wrk.format("GET", paths[i])
end
"""


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package when it is missing (root on an apt machine)."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, env=env, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and could not be installed: `apt-get install wrk`")
    return found


def publish_synthetic(url: str, *, users: int, items: int = 5_000, seed: int = 3) -> list[str]:
    """A version with `users` 30-item personal lists, segment and similar-item lists; returns the ids."""
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{k:06d}" for k in range(items)], dtype=object)
    user_ids = [f"u{k:07d}" for k in range(users)]
    n = 30
    picks = rng.integers(0, items, size=(users, n))
    user_lists = pd.DataFrame(
        {
            "user_id": np.repeat(np.array(user_ids, dtype=object), n),
            "rank": np.tile(np.arange(1, n + 1), users),
            "item_id": item_ids[picks.ravel()],
            "score": np.round(rng.random(users * n), 6),
            "reason_code": "similar_shoppers",
            "reason_text": "Shoppers with similar taste bought this",
        }
    ).drop_duplicates(["user_id", "item_id"])
    user_lists["rank"] = user_lists.groupby("user_id").cumcount() + 1
    segments = pd.DataFrame(
        [
            {
                "segment": seg,
                "rank": r,
                "item_id": item_ids[(k * 7 + r) % items],
                "score": 1.0 - r / 100,
                "reason_code": "bestseller",
                "reason_text": "Bestseller right now",
            }
            for k, seg in enumerate(["global", *(f"country:{c.lower()}" for c in COUNTRIES)])
            for r in range(1, n + 1)
        ]
    )
    similar = pd.DataFrame(
        {
            "anchor_id": np.repeat(item_ids, 10),
            "rank": np.tile(np.arange(1, 11), items),
            "item_id": item_ids[(np.repeat(np.arange(items), 10) + np.tile(np.arange(1, 11), items)) % items],
            "score": 0.5,
            "reason_code": "bought_together",
            "reason_text": "Often bought or viewed together",
        }
    )
    publish_version(
        redis.Redis.from_url(url),
        version=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        user_lists=user_lists,
        segment_lists=segments,
        item_lists=similar,
        manifest={"run_id": "bench", "generated_at": datetime.now(UTC).isoformat()},
    )
    return user_ids


@contextmanager
def _server(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(ready_url, timeout=1.0).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited early; see {log}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{ready_url} did not come up; see {log}")
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _give_carts(base_url: str, shoppers: list[str]) -> None:
    """Carts and purchases for some shoppers, posted like a storefront would."""
    now = datetime.now(UTC)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for start in range(0, len(shoppers), 200):
            events = []
            for k, user in enumerate(shoppers[start : start + 200]):
                for kind, item in (
                    ("add_to_cart", f"i{k % 5000:06d}"),
                    ("purchase", f"i{(k * 3) % 5000:06d}"),
                ):
                    events.append(
                        {
                            "user_id": user,
                            "session_id": f"s-{user}",
                            "item_id": item,
                            "event_type": kind,
                            "ts": now.isoformat(),
                            "quantity": 1,
                            "price": 9.5,
                        }
                    )
            response = client.post("/v1/events", json={"events": events})
            response.raise_for_status()


def run_wrk(wrk: str, url: str, paths: Path, *, concurrency: int, duration: int) -> dict[str, float]:
    """wrk over the URL paths in `paths`; rps, p50/p99 in ms and the error count."""
    script = paths.with_suffix(".lua")
    script.write_text(_WRK_SCRIPT)
    done = subprocess.run(
        [wrk, "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(script), url],
        env={**os.environ, "BENCH_PATHS": str(paths)},
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> dict[str, float]:
    def ms(pattern: str) -> float:
        match = re.search(pattern + r"\s+([\d.]+)(us|ms|s)\b", output)
        if not match:
            raise RuntimeError(f"wrk output has no {pattern!r}:\n{output}")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket:
        errors += sum(int(g) for g in socket.groups())
    return {
        "rps": round(float(rps.group(1)) if rps else 0.0, 1),
        "p50_ms": round(ms(r"50%"), 3),
        "p99_ms": round(ms(r"99%"), 3),
        "errors": errors,
    }


def redis_get_rps(port: int, *, concurrency: int, key: str) -> float:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return 0.0
    done = subprocess.run(
        [
            binary,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(concurrency),
            "-n",
            "200000",
            "-q",
            "GET",
            key,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"([\d.]+) requests per second", done.stdout)
    return round(float(match.group(1)), 1) if match else 0.0


def bench_serve(
    *, concurrency: int, duration: int, users: int, workers: int, progress: Progress
) -> dict[str, Any]:
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="carousel-bench-") as tmp:
        root = Path(tmp)
        redis_url = start_server(root / "redis", free_port())
        try:
            started = time.perf_counter()
            shoppers = publish_synthetic(redis_url, users=users)
            progress(
                f"published {users:,} lists into a private Redis in {time.perf_counter() - started:.1f}s"
            )
            env = {
                **os.environ,
                "CAROUSEL_REDIS_URL": redis_url,
                "CAROUSEL_VAR_DIR": str(root / "var"),
                "CAROUSEL_ADMIN_TOKEN": TOKEN,
                "CAROUSEL_MARKETING_TOKEN": TOKEN,
            }
            api_port, base_port = free_port(), free_port()
            api = [
                sys.executable,
                "-m",
                "carousel.cli",
                "serve",
                "--port",
                str(api_port),
                "--workers",
                str(workers),
            ]
            baseline = [
                sys.executable,
                "-m",
                "uvicorn",
                "carousel.bench.baseline:app",
                "--port",
                str(base_port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            rng = random.Random(7)
            with_carts = shoppers[: max(1, users // 10)]
            plain = shoppers[len(with_carts) :]
            paths = root / "paths.txt"
            lines = []
            for _ in range(20_000):
                roll = rng.random()
                if roll < 0.7:
                    lines.append(f"/v1/recommendations?user_id={rng.choice(plain)}&n=10")
                elif roll < 0.8:
                    lines.append(f"/v1/recommendations?user_id={rng.choice(with_carts)}&n=10")
                else:
                    country = rng.choice(COUNTRIES).replace(" ", "%20")
                    lines.append(
                        f"/v1/recommendations?session_id=v{rng.randrange(10**6)}&country={country}&n=10"
                    )
            paths.write_text("\n".join(lines) + "\n")
            base_paths = root / "base_paths.txt"
            base_paths.write_text("/get?key=carousel:live\n" * 10)
            with _server(api, env, f"http://127.0.0.1:{api_port}/health/live", root / "api.log"):
                _give_carts(f"http://127.0.0.1:{api_port}", with_carts)
                progress(f"API up ({workers} workers); {len(with_carts):,} shoppers have carts and purchases")
                run_wrk(
                    wrk, f"http://127.0.0.1:{api_port}", paths, concurrency=concurrency, duration=2
                )  # warm-up
                full = run_wrk(
                    wrk, f"http://127.0.0.1:{api_port}", paths, concurrency=concurrency, duration=duration
                )
                progress(f"/v1/recommendations: {full}")
            with _server(
                baseline, env, f"http://127.0.0.1:{base_port}/get?key=carousel:live", root / "base.log"
            ):
                run_wrk(wrk, f"http://127.0.0.1:{base_port}", base_paths, concurrency=concurrency, duration=2)
                base = run_wrk(
                    wrk,
                    f"http://127.0.0.1:{base_port}",
                    base_paths,
                    concurrency=concurrency,
                    duration=duration,
                )
                progress(f"baseline: {base}")
            port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
            get_rps = redis_get_rps(port, concurrency=concurrency, key="carousel:live")
            progress(f"redis-benchmark GET: {get_rps:,.0f} requests/s")
        finally:
            stop_server(redis_url)
    return {
        "endpoint": "/v1/recommendations",
        "concurrency": concurrency,
        "duration_s": duration,
        **full,
        "baseline": {"what": "bare FastAPI route returning one Redis GET", **base},
        "redis_get_rps": get_rps,
        "ratio_to_baseline": round(full["rps"] / base["rps"], 3) if base["rps"] else None,
        "setup": {
            "workers": workers,
            "users": users,
            "mix": "70% known shoppers, 10% shoppers with carts and purchases, 20% anonymous with a country",
            "cpus": os.cpu_count(),
            "load_generator": "wrk -t1 (its own process, on the same machine)",
        },
    }
