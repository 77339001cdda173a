"""`carousel bench serve`: the API under a realistic load, against its own baseline, on this machine.

What it does, all by itself and torn down afterwards:

1. starts a private redis-server and publishes a synthetic version (`--users` shoppers with 30-item
   lists, country and global segment lists, similar items for every item);
2. starts the API (`carousel serve`, `--workers`) and the baseline, a bare FastAPI route returning one
   Redis GET (`carousel/bench/baseline.py`), each in its own uvicorn process;
3. gives a tenth of the shoppers carts and recent purchases, and `BROWSING_SESSIONS` anonymous
   sessions four views each (minimal events: subject, item, type), through `POST /v1/events`, so the
   overlay and the session lists do real work;
4. drives each with `wrk` in its own process (installed from Debian when missing) over a mix of
   requests (`MIX`); then `redis-benchmark` GET at the same concurrency.

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psutil
import redis

from carousel.bench import profile
from carousel.bench.publisher import COUNTRIES, publish_synthetic
from carousel.cache.client import text
from carousel.cache.keys import LIVE_KEY
from infra.redis_server import free_port, start_server, stop_server
from jobs.publishing.loader import loader_env

Progress = Callable[[str], None]
TOKEN = "bench-admin-token-0123456789"
# The storefront's servers ask for every list (known shoppers' too) with the storefront token.
STOREFRONT_TOKEN = "bench-storefront-token-0123456789"

_WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local token = os.getenv("BENCH_TOKEN")
if token then wrk.headers["Authorization"] = "Bearer " .. token end
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


@contextmanager
def _server(
    command: list[str], env: dict[str, str], ready_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
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
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


# Anonymous sessions that viewed four items each before the load starts.
BROWSING_SESSIONS = 2_000
MIX = (
    "60% known shoppers, 10% shoppers with carts and purchases, 10% anonymous with a country, "
    "20% anonymous sessions with four views"
)


def _give_views(base_url: str, sessions: list[str]) -> None:
    """Four minimal views per anonymous session, posted like the store's servers would (the storefront
    token: a browser posts one session at a time)."""
    rng = random.Random(11)
    headers = {"Authorization": f"Bearer {STOREFRONT_TOKEN}"}
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        for start in range(0, len(sessions), 100):
            events = [
                {"session_id": session, "item_id": f"i{rng.randrange(5000):06d}", "event_type": "view"}
                for session in sessions[start : start + 100]
                for _ in range(4)
            ]
            response = client.post("/v1/events", json={"events": events})
            response.raise_for_status()
        # The load must exercise session lists, not fall back to the bestsellers unnoticed.
        served = client.get("/v1/recommendations", params={"session_id": sessions[0]}).json()
        if served.get("source") != "session":
            raise RuntimeError(f"a browsing session was served {served.get('source')!r}, not a session list")


def _give_carts(base_url: str, shoppers: list[str]) -> None:
    """Carts and purchases for some shoppers, posted like a storefront would."""
    now = datetime.now(UTC)
    headers = {"Authorization": f"Bearer {STOREFRONT_TOKEN}"}
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
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
        # Both the route and the baseline get the header: the same bytes per request.
        env={**os.environ, "BENCH_PATHS": str(paths), "BENCH_TOKEN": STOREFRONT_TOKEN},
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
    *,
    concurrency: int,
    duration: int,
    users: int,
    workers: int,
    progress: Progress,
    rounds: int = 2,
    publish_lists: int = 0,
    profile_dir: Path | None = None,
    hostile: bool = False,
) -> dict[str, Any]:
    """The full route and the baseline, alternated for `rounds` rounds of `duration` seconds each
    (so both see the same machine), then, with `publish_lists`, the full route while a version of that
    many lists is published. With `profile_dir`, py-spy samples one worker of each during round 1. With
    `hostile`, one more round of the full route while another process posts a body of junk events as
    large as the events route reads, in a loop (`_under_hostile_bodies`)."""
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
                "CAROUSEL_STOREFRONT_TOKEN": STOREFRONT_TOKEN,
                "CAROUSEL_ERASURE_SALT": "bench-erasure-salt-0123456789",
                # The hostile poster is one address, which the browsers' rate limit would stop after
                # a few bodies; many addresses would not be stopped, so their worst body is measured.
                "CAROUSEL_EVENTS_BROWSER_REQUESTS_PER_MINUTE": "0",
            }
            api_port, base_port = free_port(), free_port()
            api_url, base_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{base_port}"
            with_carts = shoppers[: max(1, users // 10)]
            browsing = [f"b{k:05d}" for k in range(BROWSING_SESSIONS)]
            paths = _request_mix(root / "paths.txt", shoppers, with_carts, browsing)
            base_paths = root / "base_paths.txt"
            base_paths.write_text(f"/get?key={quote(LIVE_KEY)}\n" * 10)
            load = {"concurrency": concurrency, "duration": duration}
            profiles: dict[str, Any] = {}
            if profile_dir is not None:
                profile_dir.mkdir(parents=True, exist_ok=True)
            with (
                _server(
                    _api_command(api_port, workers), env, f"{api_url}/health/live", root / "api.log"
                ) as api_process,
                _server(
                    _baseline_command(base_port, workers),
                    env,
                    f"{base_url}/get?key={quote(LIVE_KEY)}",
                    root / "base.log",
                ) as base_process,
            ):
                _give_carts(api_url, with_carts)
                _give_views(api_url, browsing)
                progress(
                    f"API up ({workers} workers); {len(with_carts):,} shoppers have carts and purchases, "
                    f"{len(browsing):,} anonymous sessions four views"
                )
                run_wrk(wrk, api_url, paths, concurrency=concurrency, duration=2)  # warm-up
                run_wrk(wrk, base_url, base_paths, concurrency=concurrency, duration=2)
                full_rounds: list[dict[str, float]] = []
                base_rounds: list[dict[str, float]] = []
                targets = (
                    ("full", api_process, api_url, paths, full_rounds),
                    ("baseline", base_process, base_url, base_paths, base_rounds),
                )
                for k in range(rounds):
                    for name, process, url, target_paths, results in targets:
                        recording = None
                        if profile_dir is not None and k == 0:
                            out = profile_dir / f"{name}.txt"
                            recording = profile.record(profile.worker_pid(process.pid), out, duration)
                        cpu_before = server_cpu(process.pid)
                        results.append(run_wrk(wrk, url, target_paths, **load))
                        results[-1]["busiest_worker_share"] = busiest_share(
                            cpu_before, server_cpu(process.pid)
                        )
                        if recording is not None:
                            profiles[name] = profile.finish(recording, out)
                        progress(f"round {k + 1}: {name} {results[-1]}")
                attacked = None
                if hostile:
                    attacked = _under_hostile_bodies(wrk, api_url, paths, root, concurrency, duration)
                    progress(f"while a 1 MB junk body is posted in a loop: {attacked}")
                during = None
                if publish_lists:
                    during = _during_publish(wrk, api_url, paths, redis_url, publish_lists, concurrency)
                    progress(f"during a publish of {publish_lists:,} lists: {during}")
            port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
            get_rps = redis_get_rps(port, concurrency=concurrency, key=LIVE_KEY)
            progress(f"redis-benchmark GET: {get_rps:,.0f} requests/s")
        finally:
            stop_server(redis_url)
    full, base = _mean_of(full_rounds), _mean_of(base_rounds)
    uneven = {
        name: [k + 1 for k, r in enumerate(rounds_of) if r["busiest_worker_share"] > UNEVEN_SHARE]
        for name, rounds_of in (("full", full_rounds), ("baseline", base_rounds))
    }
    report: dict[str, Any] = {
        "endpoint": "/v1/recommendations",
        "concurrency": concurrency,
        "duration_s": duration,
        **full,
        "baseline": {"what": "bare FastAPI route returning one Redis GET", **base},
        "redis_get_rps": get_rps,
        "ratio_to_baseline": round(full["rps"] / base["rps"], 3) if base["rps"] else None,
        "rounds": {"full": full_rounds, "baseline": base_rounds},
        # Rounds in which one uvicorn worker did most of the work (it accepted most of wrk's
        # connections): that server ran at about one core's rate, which skews the ratio.
        "uneven_rounds": uneven,
        "ratio_to_baseline_even_rounds": _even_ratio(full_rounds, base_rounds),
        "setup": {
            "workers": workers,
            "users": users,
            "mix": MIX,
            "cpus": os.cpu_count(),
            "load_generator": "wrk -t1 (its own process, on the same machine)",
            "rounds": f"{rounds} rounds, the full route and the baseline alternated, figures are means",
        },
    }
    if profiles:
        report["profiles"] = profiles
    if attacked is not None:
        attacked["p99_ratio_to_normal"] = (
            round(attacked["p99_ms"] / full["p99_ms"], 2) if full["p99_ms"] else None
        )
        report["hostile_bodies"] = attacked
    if during is not None:
        # Against the rounds' p99 (the goal's "normal"), and worst slice against worst slice of the
        # control run in the same minute.
        during["p99_ratio_to_normal"] = (
            round(during["p99_ms"] / full["p99_ms"], 2) if full["p99_ms"] else None
        )
        control = during["control"]
        during["p99_ratio_to_control"] = (
            round(during["p99_ms"] / control["p99_ms"], 2) if control["p99_ms"] else None
        )
        during["median_slice_p99_ratio_to_control"] = (
            round(during["median_slice_p99_ms"] / control["median_slice_p99_ms"], 2)
            if control["median_slice_p99_ms"]
            else None
        )
        report["during_publish"] = during
    return report


def _api_command(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "carousel.cli", "serve", "--port", str(port), "--workers", str(workers)]


def _baseline_command(port: int, workers: int) -> list[str]:
    """The baseline under the server `carousel serve` uses for as many workers (a listening socket each)."""
    if workers > 1 and sys.platform.startswith("linux"):
        app = ("carousel.bench.baseline:app", "--port", str(port), "--workers", str(workers))
        return [sys.executable, "-m", "serving.workers", *app]
    return [
        *(sys.executable, "-m", "uvicorn", "carousel.bench.baseline:app", "--port", str(port)),
        *("--workers", str(workers), "--log-level", "warning", "--no-access-log"),
    ]


def _request_mix(path: Path, shoppers: list[str], with_carts: list[str], browsing: list[str]) -> Path:
    """20,000 request paths in the proportions of `MIX`."""
    rng = random.Random(7)
    plain = shoppers[len(with_carts) :]
    lines = []
    for _ in range(20_000):
        roll = rng.random()
        if roll < 0.6:
            lines.append(f"/v1/recommendations?user_id={rng.choice(plain)}&n=10")
        elif roll < 0.7:
            lines.append(f"/v1/recommendations?user_id={rng.choice(with_carts)}&n=10")
        elif roll < 0.8:
            country = rng.choice(COUNTRIES).replace(" ", "%20")
            lines.append(f"/v1/recommendations?session_id=v{rng.randrange(10**6)}&country={country}&n=10")
        else:
            lines.append(f"/v1/recommendations?session_id={rng.choice(browsing)}&n=10")
    path.write_text("\n".join(lines) + "\n")
    return path


# A round is uneven when one process did more than this share of the server's CPU (with two workers an
# even round is about half each; one that served every connection does nearly all).
UNEVEN_SHARE = 0.8


def server_cpu(server_pid: int) -> dict[int, float]:
    """CPU seconds so far of a server and its processes (uvicorn's workers are its children)."""
    used: dict[int, float] = {}
    root = psutil.Process(server_pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        used[process.pid] = times.user + times.system
    return used


def busiest_share(before: dict[int, float], after: dict[int, float]) -> float:
    """The busiest process's share of the CPU the server's processes used between two `server_cpu`
    readings: 1/workers when the load was spread evenly, near 1 when one worker served it all."""
    spent = [after[pid] - before.get(pid, 0.0) for pid in after]
    total = sum(spent)
    return round(max(spent) / total, 3) if total > 0 else 1.0


def _even_ratio(full: list[dict[str, float]], base: list[dict[str, float]]) -> float | None:
    """The route's mean rate over the baseline's in the rounds where both spread their load evenly
    (round k of each ran in the same minute); None when no round did."""
    even = [
        (f["rps"], b["rps"])
        for f, b in zip(full, base, strict=True)
        if max(f["busiest_worker_share"], b["busiest_worker_share"]) <= UNEVEN_SHARE
    ]
    if not even or not sum(b for _, b in even):
        return None
    return round(sum(f for f, _ in even) / sum(b for _, b in even), 3)


def _mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "rps": round(sum(r["rps"] for r in runs) / len(runs), 1),
        "p50_ms": round(sum(r["p50_ms"] for r in runs) / len(runs), 3),
        "p99_ms": round(sum(r["p99_ms"] for r in runs) / len(runs), 3),
        "errors": int(sum(r["errors"] for r in runs)),
    }


PUBLISH_SLICE_S = 5

# Posts the body in BENCH_BODY to BENCH_URL in a loop until killed, printing one line per answer status.
_HOSTILE_POSTER = """
import os, sys, httpx
body = open(os.environ["BENCH_BODY"], "rb").read()
with httpx.Client(timeout=60) as client:
    while True:
        answer = client.post(os.environ["BENCH_URL"], content=body, headers={"Content-Type": "application/json"})
        print(answer.status_code, len(answer.content), flush=True)
"""


def _under_hostile_bodies(
    wrk: str, api_url: str, paths: Path, root: Path, concurrency: int, duration: int
) -> dict[str, Any]:
    """The route under the usual load while another process posts, in a loop, the worst body the events
    route reads: just under its size cap (`events_max_body_bytes`), of events with 48 unknown fields
    each (a larger body is refused unread, by its size); a thread probes `/health/live` every 50 ms."""
    from configs.settings import get_settings

    junk = {
        "session_id": "s",
        "item_id": "i",
        "event_type": "view",
        **{f"junk_{k}": "x" * 20 for k in range(48)},
    }
    per_event = len(orjson.dumps(junk)) + 1
    events = (get_settings().events_max_body_bytes - 64) // per_event
    body = orjson.dumps({"events": [junk] * events})
    (root / "hostile.json").write_bytes(body)
    env = {**os.environ, "BENCH_BODY": str(root / "hostile.json"), "BENCH_URL": f"{api_url}/v1/events"}
    poster = subprocess.Popen(
        [sys.executable, "-c", _HOSTILE_POSTER], env=env, stdout=subprocess.PIPE, text=True
    )
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=api_url, timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get("/health/live").raise_for_status()
                health.append((time.perf_counter() - started) * 1000)
                stop.wait(0.05)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        loaded = run_wrk(wrk, api_url, paths, concurrency=concurrency, duration=duration)
    finally:
        stop.set()
        poster.kill()
        prober.join(timeout=10)
    assert poster.stdout is not None
    answers = [line.split() for line in poster.stdout.read().splitlines() if line.strip()]
    ordered = sorted(health)
    return {
        **loaded,
        "body_bytes": len(body),
        "hostile_posts": len(answers),
        "hostile_statuses": sorted({a[0] for a in answers}),
        "hostile_answer_bytes_max": max((int(a[1]) for a in answers), default=0),
        "health_checks": len(ordered),
        "health_p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2) if ordered else None,
        "health_max_ms": round(ordered[-1], 2) if ordered else None,
    }


def _during_publish(
    wrk: str, api_url: str, paths: Path, redis_url: str, lists: int, concurrency: int
) -> dict[str, Any]:
    """The route under load while another process publishes a version of `lists` lists (at niceness 10,
    as a batch job sharing the machine would run). wrk runs in 5 s slices until the publish ends; the
    p99 reported is the worst slice's, rps the mean, errors the sum."""
    command = [
        *(sys.executable, "-m", "carousel.bench.publisher", "--redis-url", redis_url),
        *("--lists", str(lists), "--nice", "10"),
    ]
    # Redis's own record of anything that held it up for 10 ms or more (commands, scripts, memory).
    monitor = redis.Redis.from_url(redis_url)
    monitor.config_set("latency-monitor-threshold", 10)
    monitor.execute_command("LATENCY", "RESET")
    publisher = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=loader_env())
    assert publisher.stdout is not None
    if publisher.stdout.readline().strip() != "publishing":
        publisher.wait()
        raise RuntimeError(f"the publisher failed before publishing (exit {publisher.returncode})")
    started = time.perf_counter()
    slices, slice_starts = [], []
    # Until the loader has exited and Redis has freed what retention unlinked (in its background
    # thread): both are the publish's doing.
    while publisher.poll() is None or _lazyfree_pending(monitor):
        slice_starts.append(round(time.perf_counter() - started, 1))
        slices.append(run_wrk(wrk, api_url, paths, concurrency=concurrency, duration=PUBLISH_SLICE_S))
    lines = publisher.stdout.read().strip().splitlines()
    last = lines[-1] if lines else ""
    if publisher.returncode != 0 or not last.startswith("published"):
        raise RuntimeError(f"the publish under load failed (exit {publisher.returncode}): {last}")
    # The control: as many slices again right after, with nothing publishing. On a shared VM single
    # slices stall now and then on their own; the publish's effect is the difference between the two.
    control = [
        run_wrk(wrk, api_url, paths, concurrency=concurrency, duration=PUBLISH_SLICE_S) for _ in slices
    ]
    p50s = sorted(s["p50_ms"] for s in slices)
    return {
        "lists": lists,
        "publish_s": float(last.split()[1]),
        "slices": len(slices),
        "rps": round(sum(s["rps"] for s in slices) / len(slices), 1),
        "p50_ms": p50s[len(p50s) // 2],
        "p99_ms": max(s["p99_ms"] for s in slices),
        "median_slice_p99_ms": _median(s["p99_ms"] for s in slices),
        "errors": int(sum(s["errors"] for s in slices)),
        "control": {
            "what": "the same number of slices right after the publish, nothing publishing",
            "p99_ms": max(s["p99_ms"] for s in control),
            "median_slice_p99_ms": _median(s["p99_ms"] for s in control),
            "errors": int(sum(s["errors"] for s in control)),
            "slice_p99_ms": [s["p99_ms"] for s in control],
        },
        "slice_p99_ms": [s["p99_ms"] for s in slices],
        # When each slice began and each loader step ended (seconds from the publish's start), to tell
        # which step a slow slice overlapped.
        "slice_start_s": slice_starts,
        "loader_steps_s": {
            name: float(at)
            for _, at, name in (line.split(" ", 2) for line in lines if line.startswith("step "))
        },
        "redis_latency_events": [
            {"event": text(e[0]), "latest_ms": int(e[2]), "max_ms": int(e[3])}
            for e in monitor.execute_command("LATENCY", "LATEST")
        ],
    }


def _lazyfree_pending(client: Any) -> bool:
    return int(client.info("memory").get("lazyfree_pending_objects", 0)) > 0


def _median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
