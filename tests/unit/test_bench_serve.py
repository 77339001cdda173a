"""`bench serve` tells a round in which one uvicorn worker served (nearly) every connection, and reads
the ratio to the baseline on the rounds where both servers spread their load."""

from __future__ import annotations

import pytest

from carousel.bench.serve import UNEVEN_SHARE, _even_ratio, busiest_share


def test_the_busiest_share_is_half_when_two_workers_split_the_work_and_one_when_one_did_it_all() -> None:
    before = {10: 1.0, 11: 5.0, 12: 5.0}  # the supervisor and two workers
    assert busiest_share(before, {10: 1.0, 11: 9.0, 12: 9.0}) == 0.5
    assert busiest_share(before, {10: 1.0, 11: 13.0, 12: 5.0}) == 1.0
    assert busiest_share(before, {10: 1.0, 11: 11.0, 12: 7.0}) == 0.75
    assert busiest_share(before, {10: 1.0, 11: 5.0, 12: 5.0, 13: 2.0}) == 1.0  # a worker started since
    assert busiest_share(before, before) == 1.0  # nothing measured: not called even


def test_the_even_ratio_leaves_out_every_round_where_either_server_was_uneven() -> None:
    def run(rps: float, share: float) -> dict[str, float]:
        return {"rps": rps, "busiest_worker_share": share}

    full = [run(7400, 0.52), run(7450, 0.55), run(7300, 0.51)]
    base = [run(9300, 0.50), run(5400, 0.98), run(9400, UNEVEN_SHARE)]
    assert _even_ratio(full, base) == pytest.approx((7400 + 7300) / (9300 + 9400), abs=1e-3)
    assert _even_ratio(full[1:2], base[1:2]) is None
