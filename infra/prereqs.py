"""Check the two things a fresh machine must bring: Python 3.11+ and Java 17+ (for Spark).

Run with the system Python before anything is installed (`python3 infra/prereqs.py`); standard library
only. Prints one line per missing prerequisite and exits 1 when one is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys


def java_major() -> int | None:
    """The major version of `java` on PATH (or under JAVA_HOME), None when there is none."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def main() -> int:
    problems = []
    if sys.version_info < (3, 11):
        problems.append(f"carousel needs Python 3.11+, found {sys.version.split()[0]} ({sys.executable})")
    major = java_major()
    if major is None:
        problems.append("carousel needs Java 17+ for Spark: no `java` found on PATH (install openjdk-17-jre)")
    elif major < 17:
        problems.append(f"carousel needs Java 17+ for Spark, found Java {major}")
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
