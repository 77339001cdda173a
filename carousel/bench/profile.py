"""Sampling profiles for the benchmarks: py-spy records a running process, and `summarize` turns its
collapsed stacks into the table that explains where the time of a goal goes.

py-spy (a dev dependency) attaches to another process, which needs ptrace rights (root, or
`CAP_SYS_PTRACE` in a container); without them the benchmark still runs and says why there is no profile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

_LINE = re.compile(r":\d+\)")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def worker_pid(server_pid: int) -> int:
    """The process that serves requests: the busiest of uvicorn's workers (call it after a warm-up; the
    server's other children, such as multiprocessing's resource tracker, stay idle), or the server
    itself with one worker."""
    candidates = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]

    def busy(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return -1.0
        return float(times.user + times.system)

    return max(candidates, key=busy).pid


def record(pid: int, out: Path, duration_s: int, rate: int = 100) -> subprocess.Popen[bytes] | str:
    """Start py-spy on `pid` for `duration_s` (returns the process), or the reason it cannot run."""
    binary = py_spy()
    if binary is None:
        return "py-spy is not installed (pip install -e '.[dev]')"
    command = [binary, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(rate)]
    command += ["--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes] | str, out: Path, top: int = 25) -> dict[str, Any]:
    """Wait for the recording and summarize it (or say why there is none)."""
    if isinstance(process, str):
        return {"unavailable": process}
    _, err = process.communicate(timeout=600)
    if process.returncode != 0 or not out.exists():
        return {"unavailable": f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"}
    return {"file": str(out), **summarize(out.read_text(), top=top)}


def summarize(collapsed: str, top: int = 25) -> dict[str, Any]:
    """Share of samples per function, inclusive (the function or anything it called) and self, from
    py-spy's collapsed stacks (`frame;frame;... count` per line). Idle threads are left out."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "Thread._bootstrap" in stack:
            continue
        samples = int(count)
        total += samples
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "inclusive_pct": [[frame, share(n)] for frame, n in inclusive.most_common(top)],
        "self_pct": [[frame, share(n)] for frame, n in own.most_common(top)],
    }
