"""`serving.workers.restart_wait`: how long a dead worker's slot waits for a new one."""

from __future__ import annotations

from serving.workers import restart_wait


def test_a_worker_that_lived_long_restarts_at_once() -> None:
    assert restart_wait(0) == 0.0


def test_quick_deaths_in_a_row_double_the_wait_up_to_half_a_minute() -> None:
    waits = [restart_wait(n) for n in range(1, 10)]
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert waits[-1] == 30.0 and max(waits) == 30.0
    assert all(a <= b for a, b in zip(waits, waits[1:], strict=False))
