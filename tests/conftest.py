"""Shared fixtures: settings pointed at a temporary var/ and a dedicated Redis database, a local Spark."""

from __future__ import annotations

# First: the package sets NumPy's huge pages off (`carousel.NUMPY_HUGE_PAGES`), which NumPy reads when it
# is imported, and the helpers below import it. The tests run as carousel's own processes do.
import carousel  # noqa: F401

# isort: split
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from shop_store import ShopStore, publish_shop_store
from storefront_auth import ERASURE_SALT, SHOPPER_TOKEN_SECRET, STOREFRONT_TOKEN

from configs.settings import Settings

# A pytest-xdist worker's `__main__` has neither a spec nor a file, which PySpark's Spark Connect import
# (reached through Great Expectations) takes for a doctest run, and exits the worker
# (`pyspark.sql.connect.utils.check_dependencies`). Named, the worker is treated as the program it is.
if sys.modules["__main__"].__spec__ is None and not hasattr(sys.modules["__main__"], "__file__"):
    sys.modules["__main__"].__file__ = "<pytest-xdist worker>"

# A `carousel submit` of a Spark stage would leave a warm stage runner (a JVM) behind for each test's
# store: off unless a test turns it on and stops it (`infra.stage_runner.stop_runner`).
os.environ.setdefault("CAROUSEL_STAGE_RUNNER", "false")

# The Spark applications the tests start as processes (DAG tasks, `carousel submit`, the benches' jobs)
# run for seconds on small stores, two test workers to two cores: the quick JIT compiler alone spends far
# less CPU on such short runs (configs/defaults.toml). A test worker's own Spark application lives as long
# as the worker and keeps the default compilers.
SHORT_SPARK_APPS = {"CAROUSEL_SPARK_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1"}

ROOT = Path(__file__).resolve().parents[1]
# py4j logs at INFO from finalizers after pytest closed its streams ("--- Logging error ---" at exit).
logging.getLogger("py4j").setLevel(logging.WARNING)
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_REDIS_DB = 15


def shared_file(relative: str) -> Path:
    """A real data file from ../shared/data: missing fails under CI=true, else skips the test."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI must have ../shared/data")
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def shared_data() -> object:
    """`shared_data("online-retail/online_retail.csv.gz")`: the path, failing under CI when missing."""
    return shared_file


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this test session's own (a free port, files under the session's tmp): test
    sessions running side by side, or beside a demo, never flush each other's data."""
    from infra.redis_server import free_port, start_server, stop_server

    url = start_server(tmp_path_factory.mktemp("redis"), free_port())
    yield url.rsplit("/", 1)[0]
    stop_server(url)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-primary Redis Cluster of this test session's own (started on first use)."""
    from infra.redis_server import start_cluster, stop_server

    urls = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield urls[0]
    for url in urls:
        stop_server(url)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """ "single" (the default) or "cluster": a module runs on both with
    `pytest.mark.parametrize("redis_kind", ["single", "cluster"], indirect=True)`."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(redis_kind: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A flushed database of the session's Redis, or the session's flushed Redis Cluster."""
    import redis
    from redis.cluster import RedisCluster

    if redis_kind == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        cluster: Any = RedisCluster.from_url(url)
        cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        yield url
        cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        cluster.close()
        return
    url = f"{request.getfixturevalue('redis_base_url')}/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str, redis_kind: str) -> Iterator[object]:
    import redis
    from redis.cluster import RedisCluster

    client: Any = (
        RedisCluster.from_url(redis_url) if redis_kind == "cluster" else redis.Redis.from_url(redis_url)
    )
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_kind: str) -> object:
    """The settings every test starts from. Redis timeouts are generous: answers are under test, not
    latency, and two test workers, Spark and Redis share two cores (the served default of 50 ms turned a
    busy moment into a fallback list, and a comparison of two handlers' answers into a flaky failure)."""
    from configs.settings import Settings

    return Settings(
        redis_url=redis_url,
        redis_cluster=redis_kind == "cluster",
        var_dir=tmp_path / "var",
        lake_dir=tmp_path / "var" / "lake",
        spark_master="local[2]",
        spark_driver_memory="2g",
        redis_socket_timeout_s=1.0,
        redis_connect_timeout_s=1.0,
        admin_token="test-admin-token-0123456789",
        marketing_token="test-marketing-token-0123456789",
        storefront_token=STOREFRONT_TOKEN,
        shopper_token_secret=SHOPPER_TOKEN_SECRET,
        erasure_salt=ERASURE_SALT,
    )


@pytest.fixture
def short_spark_apps() -> dict[str, str]:
    """The variables for Spark applications a test starts as processes (`SHORT_SPARK_APPS`)."""
    return dict(SHORT_SPARK_APPS)


@pytest.fixture
def store_env(settings: Settings) -> dict[str, str]:
    """The `CAROUSEL_*` variables that point a `carousel` process (a DAG task, `carousel submit`) at the
    test's store."""
    return {
        "CAROUSEL_REDIS_URL": settings.redis_url,
        "CAROUSEL_VAR_DIR": str(settings.var_dir),
        "CAROUSEL_LAKE_DIR": str(settings.lake_dir),
        "CAROUSEL_SPARK_MASTER": settings.spark_master,
        "CAROUSEL_SPARK_DRIVER_MEMORY": settings.spark_driver_memory,
        "CAROUSEL_ERASURE_SALT": settings.erasure_salt_value(),
        **SHORT_SPARK_APPS,
    }


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from configs.settings import Settings
    from jobs.features.session import spark_session

    session = spark_session(Settings(spark_master="local[2]", spark_driver_memory="2g"))
    yield session


@pytest.fixture(scope="session", autouse=True)
def _stop_spark_at_exit() -> Iterator[None]:
    """Stop whatever Spark session the tests started, before py4j's finalizers log into closed streams."""
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


STORE_END_ISO = "2026-11-01T00:00:00Z"


def load_small_store(settings: object, *, users: int = 600, seed: int = 11) -> object:
    """Generate a small synthetic store (ending 2026-11-01) into the settings' lake; returns its users."""
    import pandas as pd

    from carousel.lake import Lake
    from jobs.ingest.synthetic import StoreSpec, generate_store

    end = pd.Timestamp(STORE_END_ISO)
    store = generate_store(StoreSpec(users=users, items=200, days=50, seed=seed, end=end))
    lake = Lake(settings.lake_dir)  # type: ignore[attr-defined]
    lake.upsert_items(store.items, source="generated items")
    lake.upsert_users(store.users, source="generated users")
    lake.append_events(store.events, now=end, source="generated events")
    return store.users


@pytest.fixture
def small_store() -> object:
    """`small_store(settings, users=..., seed=...)` loads a generated store into that lake."""
    return load_small_store


# The cart abandonment delay of the served app: short, so a reminder takes seconds to show, not minutes.
CART_ABANDON_AFTER_S = 2


@pytest.fixture
def shop_store(settings: Settings, redis_client: redis.Redis) -> ShopStore:
    """The small store the storefront-page tests share (`shop_store.py`), published."""
    return publish_shop_store(settings, redis_client)


@pytest.fixture
def shop_settings(settings: Settings) -> Settings:
    """The app's settings for these tests."""
    return settings.model_copy(
        update={
            "cart_abandon_after_s": CART_ABANDON_AFTER_S,
            # `/shop` and its helpers are mounted in the demo only.
            "demo": True,
        }
    )
