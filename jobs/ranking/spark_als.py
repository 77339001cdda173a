"""Spark MLlib's ALS for the model's item factors (`CAROUSEL_ALS_ENGINE=spark`): fitted on the
executors over every shopper's interactions, for shopper bases beyond one driver's memory. The driver
takes only the item factors (one row per item); shoppers are folded in against them when they are
scored (`jobs.ranking.als.fold_in`), as with implicit's factors.

MLlib's implicit-feedback ALS is the same model as implicit's (confidence 1 + alpha * weight), but it
scales the regularization by each shopper's and item's number of interactions; docs/scaling.md compares
the two on Online Retail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.ranking.als import AlsParams

# MLlib wants integer ids: shoppers get a 31-bit hash of theirs, computed where their rows are, instead of
# an index built on the driver. Two shoppers sharing a hash are fitted as one, which only blurs the
# item factors a little (about 1 in 400 shoppers shares one at 10M shoppers); their own factors come
# from the fold-in.
_INT_RANGE = 2**31 - 1


def fit_item_factors(interactions: DataFrame, params: AlsParams) -> tuple[np.ndarray, np.ndarray]:
    """Item ids (sorted, as `fit_als` orders them) and their factors, from (user_id, item_id, weight)."""
    spark = interactions.sparkSession
    ids = np.sort(interactions.select("item_id").distinct().toPandas()["item_id"].to_numpy(dtype=object))
    if not len(ids):
        return ids, np.zeros((0, params.factors), dtype=np.float32)
    index = spark.createDataFrame(
        pd.DataFrame({"item_id": ids, "iid": np.arange(len(ids), dtype=np.int32)}), "item_id string, iid int"
    )
    rows = interactions.join(F.broadcast(index), "item_id").select(
        F.pmod(F.xxhash64("user_id"), F.lit(_INT_RANGE)).cast("int").alias("uid"),
        "iid",
        F.col("weight").cast("float").alias("weight"),
    )
    model = ALS(
        rank=params.factors,
        maxIter=params.iterations,
        regParam=params.regularization,
        alpha=params.alpha,
        implicitPrefs=True,
        seed=params.seed,
        userCol="uid",
        itemCol="iid",
        ratingCol="weight",
        intermediateStorageLevel="MEMORY_AND_DISK",
        finalStorageLevel="MEMORY_AND_DISK",
    ).fit(rows)
    found = model.itemFactors.toPandas()
    factors = np.zeros((len(ids), params.factors), dtype=np.float32)
    if len(found):
        factors[found["id"].to_numpy()] = np.asarray(found["features"].tolist(), dtype=np.float32)
    return ids, factors
