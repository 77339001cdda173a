"""A headless Chromium for the browser tests: Debian's `chromium` and `chromium-driver`, installed with
apt-get when the machine lacks them (CI starts from a machine with only Python and Java).

`ensure_chromium()` returns the paths of the browser and its driver; `chromium_arguments(profile_dir)`
the command-line flags it must run with here (as root, headless, on a closed network). Used by
`tests/e2e/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = ("chromium", "chromium-driver")
_CANDIDATES = {
    "chromium": ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium"),
    "chromedriver": ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"),
}


class BrowserUnavailable(RuntimeError):
    """Chromium or its driver could not be found or installed; the message says what to do."""


def _find(name: str) -> str | None:
    for candidate in _CANDIDATES[name]:
        found = shutil.which(candidate) if "/" not in candidate else candidate
        if found and os.access(found, os.X_OK):
            return found
    return None


def installed() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are on this machine, else None."""
    browser, driver = _find("chromium"), _find("chromedriver")
    return (browser, driver) if browser and driver else None


def install_chromium() -> tuple[str, str]:
    """Install Debian's chromium and chromium-driver when running as root on an apt machine."""
    if not (shutil.which("apt-get") and os.geteuid() == 0):
        raise BrowserUnavailable(
            "no chromium/chromedriver found: install them (e.g. `sudo apt-get install chromium "
            "chromium-driver`) to run the browser tests"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        # A fresh machine has no package lists yet: fetch them once and try again.
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    found = installed()
    if done.returncode == 0 and found:
        return found
    raise BrowserUnavailable(
        f"installing {' '.join(PACKAGES)} with apt-get failed: {done.stderr.strip()[-500:]}"
    )


def ensure_chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver, installing both first when either is missing."""
    return installed() or install_chromium()


def chromium_arguments(profile_dir: Path) -> list[str]:
    """Flags for a headless Chromium run as root with a fresh profile in `profile_dir`.

    Without the background-networking flags Chromium keeps dialling Google services (component
    updates, sync, QUIC probes); on a closed network those connections are refused and logged.
    """
    return [
        "--headless=new",
        "--no-sandbox",  # the sandbox refuses to start as root
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        "--window-size=1280,1000",
    ]
