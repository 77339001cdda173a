"""carousel: the command line, the run history and model store, the Redis cache and the serving rules.

Importing the package sets one process-wide default before anything imports NumPy: its transparent huge
pages off (`NUMPY_HUGE_PAGES`). Where the kernel leaves huge pages to `madvise`, NumPy asks for them for
every array of 4 MB or more, and on a VM that hands free memory back to its host each new huge page is
memory the host must supply again. There the 1.5M-line evaluation spent 98 s in the kernel with them on
and 21 s off, and ran 1.22x faster off, with the same report (docs/performance.md, 2026-12-08). NumPy
reads the variable when it is imported; the processes carousel starts inherit it (spark-submit, the stage
runner, Spark's Python workers in local mode; a cluster's executors get it through `spark.executorEnv`).
A value already in the environment wins: `1` turns huge pages back on where they help.
"""

import os

NUMPY_HUGE_PAGES = "NUMPY_MADVISE_HUGEPAGE"
if os.environ.setdefault(NUMPY_HUGE_PAGES, "0") not in ("0", "1"):
    # NumPy would fail on its own import with a bare `int()` error that names neither the variable nor
    # the fix.
    raise ImportError(f"{NUMPY_HUGE_PAGES} must be 0 or 1, not {os.environ[NUMPY_HUGE_PAGES]!r}")
