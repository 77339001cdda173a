"""BLAS kept on one thread while any ALS fit of the process runs, whichever thread leaves first."""

from __future__ import annotations

import threading

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from jobs.ranking.threads import single_threaded_blas


def _blas_threads() -> set[int]:
    return {int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_the_blas_limit_holds_for_worker_threads_until_the_last_one_inside_leaves() -> None:
    """The thread that starts the workers enters first; two workers overlap (A in, B in, A out, B
    out): B still sees one BLAS thread after A left, and so does everyone until the starter leaves,
    which gives BLAS its own setting back. With a `threadpool_limits` per thread, A's exit would lift
    the limit under B."""
    if not _blas_threads():
        pytest.skip("no BLAS library loaded")
    with threadpool_limits(2, "blas"):
        assert _blas_threads() == {2}
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        seen: dict[str, set[int]] = {}

        def a() -> None:
            with single_threaded_blas():
                a_in.set()
                assert b_in.wait(timeout=30)
            a_out.set()

        def b() -> None:
            assert a_in.wait(timeout=30)
            with single_threaded_blas():
                b_in.set()
                assert a_out.wait(timeout=30)
                seen["B after A left"] = _blas_threads()

        with single_threaded_blas():
            threads = [threading.Thread(target=a), threading.Thread(target=b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            seen["starter after both left"] = _blas_threads()
        assert seen == {"B after A left": {1}, "starter after both left": {1}}
        assert _blas_threads() == {2}
