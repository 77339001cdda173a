"""The guard that keeps served lists from falling below a plain baseline.

On the newest label window (a ranker trained on the older windows, `jobs.ranking.training`), the ranker
and three baseline orderings of the same candidates are measured per activity band and per task:

* bands of the shopper's past orders (`u_orders`, distinct purchase sessions before the cutoff): 0, 1,
  2-3, 4-9, 10+ (`BAND_EDGES`): how much history a shopper has is what decides whether re-buys,
  collaborative filtering or bestsellers predict them best;
* tasks: ``all`` (every candidate) and ``new_items`` (only candidates the shopper never bought, labels
  only on those), as in the offline evaluation;
* baselines as the evaluation defines them, on the candidates: ``als`` (ALS score), ``popularity``
  (distinct buyers over 30 days, then 90) and ``repurchase`` (own items by purchase sessions, then
  recency, then popularity; in ``new_items`` it is popularity, so it is not compared there).

A baseline replaces the ranker on a band and task only when it wins clearly (`wins`): at least
`MIN_SHOPPERS` buying shoppers in the band, a mean NDCG@10 at least `MARGIN` above the ranker's, and a
paired difference of at least `MIN_Z` standard errors. A small band's mean moves by more than any gap
worth acting on, so noise does not flip choices, and the ranker keeps every tie.

In ``new_items`` two learned orders are compared too: ``explore`` (a ranker trained on never-bought
candidates alone, `jobs.ranking.ranker.explore_rows`) and ``blend`` (per shopper, the mean of the
ranker's and the explore model's percentile ranks among the never-bought candidates, `blend_key`: two
models of the same features that err differently). They use every signal the ranker uses and are judged
on every band's shoppers together (`POOLED`), several times the shoppers of one band. With at least
`MIN_SHOPPERS` of them, the blend fills the never-bought places by default (`DEFAULTS`) unless the ranker
clearly beats it there (the rule above, the other way round), and the explore model replaces it where it
clearly beats the ranker with a higher mean. Band by band, a baseline that clearly beats the ranker
still serves its band, and a band where the ranker clearly beats the pooled choice keeps the ranker.
Why the blend by default: on the label windows before the evaluation's test folds it was above the
ranker on nearly every window of three stores, where the explore model alone swung both ways, and a
per-band choice between them flipped with a one-second shift of the cutoff (docs/evaluation.md, "The
guard").

Serving (`guarded_scores`): a guarded shopper's candidates are ordered by the band's ``all`` scorer; the
slots that order gives to never-bought items are then filled with those items in the order of the band's
``new_items`` scorer (the explore part of the list). The shopper's own ranker scores are dealt out in that
order, best first, so every shopper's published scores are the same numbers as the ranker's: the output
gate's percentiles, the top-up floor and anything else reading scores across shoppers see no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jobs.ranking.metrics import candidate_ndcg

SCORERS: tuple[str, ...] = ("ranker", "als", "popularity", "repurchase", "explore", "blend")
TASKS: tuple[str, ...] = ("all", "new_items")
# What may replace the ranker per task: on never-bought items the repurchase order is the popularity
# order, and the explore model (a ranker that learnt from never-bought candidates alone) and its blend
# with the ranker order only those.
BASELINES: dict[str, tuple[str, ...]] = {
    "all": ("als", "popularity", "repurchase"),
    "new_items": ("als", "popularity", "explore", "blend"),
}
# The challengers that read the explore model's scores; they are also compared on the pooled window.
LEARNED: tuple[str, ...] = ("explore", "blend")
# Per task, the learned order that serves unless the ranker clearly beats it on the pooled window.
DEFAULTS: dict[str, str] = {"new_items": "blend"}
# The name of the pooled comparison among the bands' figures (`ScorerGuard.comparison`).
POOLED = "all bands"
# Lower bounds of the activity bands on `u_orders`: 0, 1, 2-3, 4-9, 10+.
BAND_EDGES: tuple[int, ...] = (0, 1, 2, 4, 10)
# A baseline replaces the ranker on a band only with this many buying shoppers in the band's window:
# per-shopper NDCG@10 is mostly 0 or large (a standard deviation of 0.3-0.4), so the mean of fewer
# shoppers moves by more than 10% of a typical band's figure from sampling alone.
MIN_SHOPPERS = 200
# ... and only when its mean NDCG@10 is at least 2% above the ranker's (smaller gaps are not worth
# giving up the ranker's use of every signal for) ...
MARGIN = 0.02
# ... and the paired per-shopper difference is at least two standard errors (about a 2% chance that a
# baseline no better than the ranker passes on a given band and task).
MIN_Z = 2.0
# The candidate columns the guard reads.
_READS = (
    "user_id",
    "item_id",
    "u_orders",
    "ui_purchases",
    "ui_days_since_purchase",
    "als_score",
    "pop_30d",
    "pop_90d",
    "pop_rank",
)
# Dealt-out scores step down by this much per place, so that equal ranker scores cannot reorder a
# guarded list (ties are broken by item id downstream).
_TIE_STEP = 1e-9


def band_names(edges: tuple[int, ...] = BAND_EDGES) -> list[str]:
    """Readable names of the bands: "0", "1", "2-3", "4-9", "10+"."""
    names = []
    for low, high in zip(edges, (*edges[1:], None), strict=True):
        if high is None:
            names.append(f"{low}+")
        elif high - low == 1:
            names.append(str(low))
        else:
            names.append(f"{low}-{high - 1}")
    return names


def band_of(orders: pd.Series | np.ndarray, edges: tuple[int, ...] = BAND_EDGES) -> np.ndarray:
    """The band (index into `edges`) of each row's past orders; missing counts are no orders."""
    values = np.nan_to_num(np.asarray(orders, dtype=np.float64), nan=0.0)
    return np.maximum(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1, 0)


def _order_key(*keys: np.ndarray) -> np.ndarray:
    """A score (higher is better) that orders rows by `keys`, the first the most significant, each
    ascending; equal keys keep the rows' order. Only its order within a shopper means anything."""
    order = np.lexsort(keys[::-1])
    key = np.empty(len(order), dtype=np.float64)
    key[order] = -np.arange(len(order), dtype=np.float64)
    return key


def baseline_keys(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per baseline, a score of each candidate (higher first) giving the baseline's order within a shopper.

    `frame` holds the candidates' features (`jobs.ranking.candidate_features.FEATURES`)."""

    def column(name: str, missing: float) -> np.ndarray:
        return np.nan_to_num(frame[name].to_numpy(dtype=np.float64), nan=missing)

    # Distinct buyers over 30 days, then 90; the 50 bestsellers' rank (all time last) breaks what is left.
    popular = _order_key(-column("pop_30d", 0.0), -column("pop_90d", 0.0), column("pop_rank", 1e9))
    return {
        "als": column("als_score", -1e9),
        "popularity": popular,
        "repurchase": _order_key(
            -column("ui_purchases", 0.0), column("ui_days_since_purchase", 1e9), -popular
        ),
    }


@dataclass(frozen=True)
class ScorerGuard:
    """Which scorer orders each band's lists (`serve`: task -> scorer per band), and the window figures
    it was chosen on (`comparison`, kept for the model's record)."""

    serve: dict[str, tuple[str, ...]]
    edges: tuple[int, ...] = BAND_EDGES
    comparison: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def active(self) -> bool:
        """Whether any band is served by something other than the ranker."""
        return any(s != "ranker" for scorers in self.serve.values() for s in scorers)

    def serves(self, scorer: str) -> bool:
        """Whether `scorer` serves any band of any task."""
        return any(scorer in scorers for scorers in self.serve.values())

    @property
    def needs_explore(self) -> bool:
        """Whether some band is served by a scorer that reads the explore model (`LEARNED`)."""
        return any(self.serves(scorer) for scorer in LEARNED)

    def explore_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of `frame` (candidates with `u_orders`) belong to a band whose never-bought places a
        scorer reading the explore model fills: the rows whose explore scores are read."""
        served = np.array([s in LEARNED for s in self.serve["new_items"]], dtype=bool)
        return served[band_of(frame["u_orders"], self.edges)]

    def to_json(self) -> dict[str, Any]:
        return {
            "bands": band_names(self.edges),
            "edges": list(self.edges),
            "serve": {task: list(scorers) for task, scorers in self.serve.items()},
            "rule": {"min_shoppers": MIN_SHOPPERS, "margin": MARGIN, "min_z": MIN_Z},
            "comparison": self.comparison,
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any] | None) -> ScorerGuard | None:
        """The guard stored in a model.json; None for a model from before the guard."""
        if not stored or "serve" not in stored:
            return None
        edges = tuple(int(e) for e in stored["edges"])
        serve = {task: tuple(str(s) for s in stored["serve"][task]) for task in TASKS}
        if any(len(scorers) != len(edges) or not set(scorers) <= set(SCORERS) for scorers in serve.values()):
            raise ValueError(f"a stored guard does not match its bands: {stored}")
        return cls(serve=serve, edges=edges, comparison=dict(stored.get("comparison", {})))


def blend_key(users: np.ndarray, new: np.ndarray, ranker: np.ndarray, explore: np.ndarray) -> np.ndarray:
    """The ``blend`` order of each shopper's never-bought rows (`new`): the mean of the ranker's and the
    explore model's percentile ranks among them (higher first). Percentiles, not scores: two lambdarank
    models' scores have no common scale. NaN on bought rows, which it never orders."""
    key = np.full(len(users), np.nan)
    at = np.flatnonzero(new)
    if len(at):
        groups = users[at]
        ranks = [
            pd.Series(scores[at]).groupby(groups).rank(pct=True).to_numpy() for scores in (ranker, explore)
        ]
        key[at] = (ranks[0] + ranks[1]) / 2.0
    return key


def wins(ranker: np.ndarray, baseline: np.ndarray) -> tuple[bool, float]:
    """Whether `baseline` beats `ranker` clearly on one band and task (per-shopper NDCG@10 of the same
    shoppers, paired), and the mean difference in standard errors."""
    if len(ranker) < 2:
        return False, 0.0
    diff = baseline - ranker
    gap = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    z = gap / se if se > 0 else (0.0 if gap == 0 else float(np.sign(gap)) * np.inf)
    clear = (
        len(diff) >= MIN_SHOPPERS
        and gap > 0
        and float(baseline.mean()) >= (1.0 + MARGIN) * float(ranker.mean())
        and z >= MIN_Z
    )
    return clear, z


def choose_scorers(
    window: pd.DataFrame, ranker_scores: np.ndarray, explore_scores: np.ndarray | None = None
) -> ScorerGuard:
    """Compare the ranker with the baselines on a label window, per band and task, and choose.

    Parameters
    ----------
    window
        Labelled candidates of the window's buying shoppers: user_id, the features and label.
    ranker_scores
        The scores of a ranker that did not learn from this window, per row of `window`.
    explore_scores
        The scores of an explore model that did not learn from this window, per row (only never-bought
        rows are read); None when there is none, and it is not compared.

    Returns
    -------
    ScorerGuard
        The scorer of each band and task, with the figures: per task and band the shoppers, each
        scorer's mean NDCG@10, each baseline's difference in standard errors, and the choice.
    """
    bands = band_of(window["u_orders"])
    names = band_names()
    serve: dict[str, tuple[str, ...]] = {}
    comparison: dict[str, Any] = {}
    # Shoppers as integer codes: the sorts below are several times slower on string ids.
    users, labels = pd.factorize(window["user_id"])[0], window["label"].to_numpy()
    never_bought = window["ui_purchases"].to_numpy() == 0
    # The orders are computed once over the whole window and read on each task's rows (a shopper's rows
    # keep their relative order): the window is every buyer's candidates, gigabytes on a large store,
    # and is never copied.
    keys = {"ranker": ranker_scores, **baseline_keys(window)}
    if explore_scores is not None:
        keys["explore"] = explore_scores
        keys["blend"] = blend_key(users, never_bought, ranker_scores, explore_scores)
    for task in TASKS:
        keep = never_bought.copy() if task == "new_items" else np.ones(len(window), dtype=bool)
        # Only shoppers who bought one of the task's candidates are measured.
        bought = pd.Series(np.where(keep, labels, 0)).groupby(users).transform("max").to_numpy() > 0
        keep &= bought
        frame = pd.DataFrame({"user_id": users[keep], "label": labels[keep]})
        rivals = [name for name in BASELINES[task] if name in keys]
        ndcg = {name: candidate_ndcg(frame, keys[name][keep]) for name in ("ranker", *rivals)}
        task_bands = bands[keep]
        shopper_band = pd.Series(task_bands, index=frame["user_id"].to_numpy()).groupby(level=0).first()
        figures: dict[str, Any] = {}
        # On every band's shoppers together: the task's default learned order, or another learned one
        # that clearly beats the ranker, or the ranker where it clearly beats the default. With fewer
        # buying shoppers than a choice needs, the ranker keeps its places: the learned orders then
        # learnt from as few first purchases.
        default, preferred = "ranker", DEFAULTS.get(task)
        if preferred in keys:
            learned = [name for name in rivals if name in LEARNED and name != preferred]
            pooled = shopper_band.index
            fallback = str(preferred) if len(pooled) >= MIN_SHOPPERS else "ranker"
            default, figures[POOLED] = _compare(ndcg, pooled, learned, fallback)
        chosen = []
        for band, name in enumerate(names):
            shoppers = shopper_band.index[shopper_band.to_numpy() == band]
            best, figures[name] = _compare(ndcg, shoppers, rivals, default)
            chosen.append(best)
        serve[task] = tuple(chosen)
        comparison[task] = figures
    return ScorerGuard(serve=serve, comparison=comparison)


def _compare(
    ndcg: dict[str, pd.Series], shoppers: pd.Index, rivals: list[str], default: str
) -> tuple[str, dict[str, Any]]:
    """The scorer of one group of shoppers and its figures: a rival that clearly beats the ranker (the
    best mean of those that do), else `default` unless the ranker clearly beats it, else the ranker."""
    per_shopper = {s: v.reindex(shoppers).to_numpy() for s, v in ndcg.items()}
    mean = {s: float(v.mean()) if len(v) else -np.inf for s, v in per_shopper.items()}
    winners, z_of = [], {}
    for rival in dict.fromkeys([*rivals, default]):
        if rival == "ranker":
            continue
        clear, z = wins(per_shopper["ranker"], per_shopper[rival])
        z_of[rival] = round(z, 2) if np.isfinite(z) else None
        if clear and rival in rivals:
            winners.append(rival)
    if default != "ranker" and not wins(per_shopper[default], per_shopper["ranker"])[0]:
        winners.append(default)
    best = max(winners, key=lambda s: mean[s]) if winners else "ranker"
    return best, {
        "shoppers": len(shoppers),
        "ndcg@10": {s: round(float(v.mean()), 4) if len(v) else None for s, v in per_shopper.items()},
        "z": z_of,
        "serve": best,
    }


def guarded_scores(
    featured: pd.DataFrame,
    ranker_scores: np.ndarray,
    guard: ScorerGuard | None,
    explore_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The scores to serve, and which scorer placed each candidate (its position in `SCORERS`; None when
    the ranker placed all).

    A guarded shopper's candidates are ordered by their band's ``all`` scorer, then the places that order
    gives to never-bought items are refilled with them in the order of the band's ``new_items`` scorer;
    the shopper's own ranker scores are dealt out in the resulting order (best first, strictly falling),
    so the shopper's scores are the ranker's numbers in another order. Other shoppers keep theirs.
    `explore_scores` (per row; read on never-bought rows) are required when the guard serves the explore
    model or the blend.
    """
    if guard is None or not guard.active or featured.empty:
        return ranker_scores, None
    bands = band_of(featured["u_orders"], guard.edges)
    # Scorers as their positions in `SCORERS` (0 is the ranker): a band's choice is read per row.
    choice = {
        task: np.array([SCORERS.index(s) for s in guard.serve[task]], dtype=np.int8)[bands] for task in TASKS
    }
    rows = np.flatnonzero((choice["all"] > 0) | (choice["new_items"] > 0))
    if not len(rows):
        return ranker_scores, None
    frame = pd.DataFrame({name: featured[name].to_numpy()[rows] for name in _READS})
    own = ranker_scores[rows]
    users = pd.factorize(frame["user_id"].to_numpy())[0]
    new = frame["ui_purchases"].to_numpy() == 0
    keys = {"ranker": own, **baseline_keys(frame)}
    if explore_scores is not None:
        keys["explore"] = np.asarray(explore_scores, dtype=np.float64)[rows]
        if guard.serves("blend"):
            keys["blend"] = blend_key(users, new, own, keys["explore"])

    def key_of(chosen: np.ndarray) -> np.ndarray:
        key = np.empty(len(rows), dtype=np.float64)
        for code, scorer in enumerate(SCORERS):
            at = chosen == code
            if not at.any():
                continue
            if scorer not in keys:
                raise ValueError(f"the guard serves some shoppers with the {scorer} model, which is missing")
            key[at] = keys[scorer][at]
        return key

    # The list by the `all` scorer (rows grouped by shopper), then its never-bought places refilled in
    # the explore order: both runs of never-bought rows hold the same shoppers in the same order.
    # Equal keys (a popularity tie, the same leaf values of a ranker's trees) go by item id, as lists do:
    # the row order of a shopper's candidates depends on which shoppers were scored with them.
    items = pd.factorize(frame["item_id"].to_numpy(), sort=True)[0]
    served = np.lexsort((items, -key_of(choice["all"][rows]), users))
    new_rows = np.flatnonzero(new)
    explore = new_rows[np.lexsort((items[new], -key_of(choice["new_items"][rows])[new], users[new]))]
    served[new[served]] = explore
    # Each shopper's ranker scores, best first, in the same shopper order as `served`.
    dealt_order = np.lexsort((-own, users))
    dealt = own[dealt_order]
    place = np.arange(len(rows)) - np.searchsorted(users[dealt_order], users[dealt_order], side="left")
    scores = ranker_scores.copy()
    scores[rows[served]] = dealt - place * _TIE_STEP
    placed_by = np.zeros(len(featured), dtype=np.int8)
    placed_by[rows] = np.where(new, choice["new_items"][rows], choice["all"][rows])
    return scores, placed_by
