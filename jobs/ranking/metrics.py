"""Ranking metrics of lists against what shoppers went on to buy: NDCG@10, Recall@10, MAP@12 and
catalog coverage, with binary relevance.

One implementation for the offline evaluation (`jobs.evaluation.protocol`, lists against the test
period's purchases) and for the out-of-sample figures kept with every trained model
(`jobs.ranking.training`, candidates ordered by a score against the label window's purchases).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _ideal_dcg(n: int) -> np.ndarray:
    """``out[m]`` is the DCG of m relevant items at the top of a list (``out[0] == 0``)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))])


def _sum_by(values: np.ndarray, keys: np.ndarray, index: pd.Index) -> np.ndarray:
    """Sums of ``values`` per key, in the order of ``index`` (0 for a key without values)."""
    sums = pd.Series(values, dtype="float64").groupby(keys).sum()
    return sums.reindex(index, fill_value=0.0).to_numpy(dtype="float64")


def hit_metrics(hit_users: np.ndarray, hit_ranks: np.ndarray, n_targets: pd.Series) -> pd.DataFrame:
    """NDCG@10, Recall@10 and MAP@12 per shopper from the ranks at which their lists hit a target.

    Parameters
    ----------
    hit_users, hit_ranks
        One entry per hit: its shopper and its 1-based rank in their list, sorted by shopper, then rank.
    n_targets
        Targets per shopper, indexed by the shoppers scored (in output order); a shopper without hits
        scores 0.

    Returns
    -------
    pandas.DataFrame
        Indexed like `n_targets`, with columns ``ndcg@10``, ``recall@10``, ``map@12`` and ``n_targets``.
    """
    index = n_targets.index
    targets = n_targets.to_numpy(dtype="float64")
    rank = np.asarray(hit_ranks, dtype="float64")

    at10 = rank <= 10
    dcg = _sum_by(np.where(at10, 1.0 / np.log2(rank + 1.0), 0.0), hit_users, index)
    ideal = _ideal_dcg(10)[np.minimum(targets, 10).astype(np.int64)]
    ndcg = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)

    hits10 = _sum_by(at10.astype("float64"), hit_users, index)
    recall = np.divide(hits10, targets, out=np.zeros_like(hits10), where=targets > 0)

    # Precision at the rank of each hit: the hit's position among the shopper's hits over its rank.
    at12 = rank <= 12
    nth_hit = pd.Series(hit_users).groupby(hit_users, sort=False).cumcount().to_numpy() + 1.0
    ap_sum = _sum_by(np.where(at12, nth_hit / rank, 0.0), hit_users, index)
    denom = np.minimum(targets, 12.0)
    ap = np.divide(ap_sum, denom, out=np.zeros_like(ap_sum), where=denom > 0)
    return pd.DataFrame(
        {"ndcg@10": ndcg, "recall@10": recall, "map@12": ap, "n_targets": targets}, index=index
    )


def per_user_metrics(lists: pd.DataFrame, targets: pd.DataFrame, users: np.ndarray) -> pd.DataFrame:
    """NDCG@10, Recall@10 and MAP@12 of every shopper in ``users`` (0 where the list misses them all).

    Parameters
    ----------
    lists:
        Clean lists (`clean_lists`): ``user_id, item_id, rank`` with ranks 1..n and no repeats.
    targets:
        Relevant ``user_id, item_id`` pairs (distinct).
    users:
        The shoppers scored; a shopper with no list scores 0.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``user_id`` (in the order of ``users``) with columns ``ndcg@10``, ``recall@10``,
        ``map@12`` and ``n_targets``.
    """
    index = pd.Index(users, name="user_id")
    n_targets = targets.groupby("user_id").size().reindex(index, fill_value=0)
    hits = lists.merge(targets[["user_id", "item_id"]], on=["user_id", "item_id"], how="inner")
    hits = hits.sort_values(["user_id", "rank"], kind="stable")
    return hit_metrics(hits["user_id"].to_numpy(), hits["rank"].to_numpy(), n_targets)


def evaluate_lists(
    lists: pd.DataFrame, targets: pd.DataFrame, users: np.ndarray, catalog: np.ndarray
) -> tuple[dict[str, float | int], pd.DataFrame]:
    """The task-level metrics of clean lists, and the per-user table they average.

    Parameters
    ----------
    lists:
        Clean lists (`clean_lists`).
    targets:
        Relevant ``user_id, item_id`` pairs of the task.
    users:
        The shoppers scored in the task.
    catalog:
        Item ids of the catalog, for ``coverage@10``.

    Returns
    -------
    (dict, pandas.DataFrame)
        ``{"ndcg@10", "recall@10", "map@12", "coverage@10", "users"}`` and `per_user_metrics`.
    """
    per_user = per_user_metrics(lists, targets, users)
    shown = pd.Index(lists.loc[lists["rank"] <= 10, "item_id"].unique())
    coverage = float(shown.isin(pd.Index(catalog)).sum() / len(catalog)) if len(catalog) else 0.0
    n = len(per_user)
    summary: dict[str, float | int] = {
        "ndcg@10": float(per_user["ndcg@10"].mean()) if n else 0.0,
        "recall@10": float(per_user["recall@10"].mean()) if n else 0.0,
        "map@12": float(per_user["map@12"].mean()) if n else 0.0,
        "coverage@10": coverage,
        "users": int(n),
    }
    return summary, per_user


def candidate_ndcg(labelled: pd.DataFrame, scores: np.ndarray) -> pd.Series:
    """NDCG@10 of each shopper of `labelled` (user_id, label) with their candidates ordered by `scores`
    (ties keep the candidates' order), indexed by shopper: a label window's figures."""
    order = np.lexsort((-scores, labelled["user_id"].to_numpy()))
    users = labelled["user_id"].to_numpy()[order]
    labels = labelled["label"].to_numpy()[order]
    starts = np.searchsorted(users, users, side="left")
    ranks = np.arange(len(users)) - starts + 1
    hit = labels > 0
    n_targets = pd.Series(labels, dtype="float64").groupby(users).sum()
    return hit_metrics(users[hit], ranks[hit], n_targets)["ndcg@10"]
