"""How sure the ranker's margin is: its NDCG@10 as a ratio to the best other model, per fold and on
average over the folds of `jobs.evaluation.protocol.run_evaluation`, with a paired bootstrap interval.

The bootstrap resamples the scored shoppers of each fold with replacement (independently per fold, the
same draw for every model, so the models stay paired on the same shoppers), recomputes every model's
mean NDCG@10, and takes the ranker's mean over the best other model's mean in that resample. The best
other model is picked again in every resample, so the interval carries the choice of the reference too.
The interval of the mean is the percentile interval of the per-fold ratios averaged resample by
resample. It treats the shoppers as the sample: it says how much the figure would move with other
shoppers of the same months, not with other months (the spread of the folds shows that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ratio_to_best_other"]


def ratio_to_best_other(
    per_fold: Sequence[pd.DataFrame],
    *,
    model: str = "ranker",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 7,
) -> dict[str, Any]:
    """``model``'s mean NDCG@10 over the best other model's, per fold and averaged, with bootstrap intervals.

    Parameters
    ----------
    per_fold:
        One frame per fold (time order): one row per scored shopper, one column per model, values the
        shopper's NDCG@10. Every model is scored on the same shoppers of a fold.
    model:
        The column compared with the best of the others.
    resamples:
        Bootstrap resamples (>= 1).
    confidence:
        Coverage of the percentile intervals, in (0, 1).
    seed:
        Seed of the resampling, so a report can be reproduced.

    Returns
    -------
    dict
        ``{"folds": [{"best_other", "ratio", "ci", "users"}], "mean_ratio", "ci"}`` where ``ci`` is
        ``[low, high]``. A ratio whose reference scores 0 (or a fold without shoppers) is None, and the
        mean is then None too.

    Raises
    ------
    ValueError
        If a frame lacks ``model`` or any other model, or the settings are out of range.
    """
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    rng = np.random.default_rng(seed)
    tails = [(1.0 - confidence) / 2 * 100, (1.0 + confidence) / 2 * 100]
    rows: list[dict[str, Any]] = []
    replicates = np.full((resamples, len(per_fold)), np.nan)
    for fold, frame in enumerate(per_fold):
        others = [c for c in frame.columns if c != model]
        if model not in frame.columns or not others:
            raise ValueError(
                f"fold {fold + 1}: need {model!r} and at least one other model, got {list(frame.columns)}"
            )
        values = frame[[model, *others]].to_numpy(dtype="float64")
        n = len(values)
        if n == 0:
            rows.append({"best_other": None, "ratio": None, "ci": [None, None], "users": 0})
            continue
        means = values.mean(axis=0)
        best = int(np.argmax(means[1:]))
        # Paired: one draw of shoppers per resample, applied to every model's column.
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
        sampled = counts @ values / n
        replicates[:, fold] = _ratio(sampled[:, 0], sampled[:, 1:].max(axis=1))
        ratio = _ratio(np.array([means[0]]), np.array([means[1 + best]]))[0]
        rows.append(
            {
                "best_other": others[best],
                "ratio": _number(ratio),
                "ci": _interval(replicates[:, fold], tails),
                "users": n,
            }
        )
    point = [row["ratio"] for row in rows]
    mean = None if any(r is None for r in point) or not point else float(np.mean(point))
    return {
        "folds": rows,
        "mean_ratio": mean,
        "ci": _interval(replicates.mean(axis=1), tails) if mean is not None else [None, None],
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, NaN where the denominator is 0 (the ratio is undefined there)."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def _interval(samples: np.ndarray, tails: list[float]) -> list[float | None]:
    """The percentile interval of the defined resamples ([None, None] when none is defined)."""
    defined = samples[~np.isnan(samples)]
    if not len(defined):
        return [None, None]
    low, high = np.percentile(defined, tails)
    return [round(float(low), 4), round(float(high), 4)]
