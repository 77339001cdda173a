"""The one typed settings object: defaults from `configs/defaults.toml`, overridden by `CAROUSEL_*`.

`get_settings()` builds it once per process; tests build their own `Settings(...)` with explicit values.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")

# The Spark masters the jobs accept: local mode (`local`, `local[N]`, `local[*]`), a standalone cluster
# (`spark://host:port`, several masters comma-separated for high availability), YARN and Kubernetes.
SPARK_MASTER_PATTERN = (
    r"local(\[(\d+|\*)(,\d+)?\])?"
    r"|spark://[\w.-]+:\d+(,[\w.-]+:\d+)*"
    r"|yarn"
    r"|k8s://https?://[\w.-]+(:\d+)?"
)


# Where the lake and the run folders may live: a local or mounted path, or a `file://` URI of one. The
# stages read and write them as files (atomic renames, footers read in place), so object stores and
# HDFS are refused by name instead of becoming a local folder called "s3a:".
_STORAGE_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def storage_path(value: object, name: str) -> Path:
    """A storage setting as a path: a plain path, or a `file://` URI (`file:///abs/path`)."""
    text = str(value).strip()
    if not text:
        raise ValueError(f"CAROUSEL_{name.upper()} is empty")
    match = _STORAGE_SCHEME.match(text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    if scheme != "file":
        raise ValueError(
            f"CAROUSEL_{name.upper()}={text!r}: {scheme}:// storage is not supported. The lake and the "
            "run folders must be a filesystem mounted at the same path on the driver and every Spark "
            "worker (a local disk, NFS or a cluster filesystem); see docs/scaling.md."
        )
    rest = text[len(match.group(0)) :]
    if not rest.startswith("/"):
        raise ValueError(
            f"CAROUSEL_{name.upper()}={text!r}: a file:// URI names an absolute path (file:///...)"
        )
    return Path(unquote(rest))


# The demo's erasure salt: public, so only for the demo (it is the prefix digests had before the salt).
DEMO_ERASURE_SALT = "carousel-erasure:"


class Settings(BaseSettings):
    """Every knob of carousel; see `configs/defaults.toml` for what each one does."""

    model_config = SettingsConfigDict(
        env_prefix="CAROUSEL_", toml_file=DEFAULTS_FILE, extra="forbid", validate_default=True
    )

    redis_url: str
    redis_cluster: bool
    redis_socket_timeout_s: float = Field(gt=0, le=10)
    redis_connect_timeout_s: float = Field(gt=0, le=10)
    var_dir: Path
    lake_dir: Path
    spark_master: str = Field(pattern=rf"^({SPARK_MASTER_PATTERN})$")
    spark_driver_memory: str = Field(pattern=r"^\d+[kmgt]?$")
    spark_shuffle_partitions: int = Field(ge=1)
    spark_java_options: str
    stage_runner: bool
    stage_runner_idle_s: int = Field(ge=10, le=86_400)
    stage_runner_max_rss_mb: int = Field(ge=500)
    list_length: int = Field(ge=1, le=500)
    list_overflow: int = Field(ge=0, le=500)
    candidates_per_user: int = Field(ge=1, le=2000)
    als_factors: int = Field(ge=2, le=1024)
    als_iterations: int = Field(ge=1, le=200)
    als_regularization: float = Field(ge=0)
    als_alpha: float = Field(gt=0)
    label_days: int = Field(ge=1, le=365)
    ranker_train_windows: int = Field(ge=1, le=12)
    fit_max_shoppers: int = Field(ge=1_000, le=100_000_000)
    als_engine: Literal["implicit", "spark"]
    popularity_days: int = Field(ge=1, le=3650)
    new_item_days: int = Field(ge=0, le=365)
    explore_every: int = Field(ge=0, le=100)
    min_user_coverage: float = Field(ge=0, le=1)
    drift_sample: int = Field(ge=1, le=1_000_000)
    min_list_overlap: float = Field(ge=0, le=1)
    drift_score_tolerance: float = Field(ge=0)
    min_item_coverage_ratio: float = Field(ge=0, le=10)
    max_duplicate_rate: float = Field(ge=0, le=1)
    min_volume_ratio: float = Field(ge=0, le=1)
    holdout_percent: float = Field(ge=0, le=100)
    holdout_salt: str = Field(min_length=1)
    cart_abandon_after_s: int = Field(ge=1)
    post_purchase_after_days: float = Field(ge=0, le=365)
    post_purchase_until_days: float = Field(gt=0, le=365)
    browse_min_views: int = Field(ge=1, le=1000)
    audience_lookback_days: float = Field(gt=0, le=365)
    audience_cap_hours: float = Field(ge=0, le=24 * 365)
    events_max_per_request: int = Field(ge=1, le=10_000)
    events_max_body_bytes: int = Field(ge=1024, le=64 * 1024 * 1024)
    events_max_clock_skew_s: int = Field(ge=0, le=86_400)
    events_dedupe_ttl_s: int = Field(ge=60, le=30 * 86_400)
    events_body_timeout_s: float = Field(gt=0, le=600)
    events_browser_requests_per_minute: int = Field(ge=0, le=1_000_000)
    forwarded_allow_ips: str = Field(min_length=1)
    auth_failures_per_minute: int = Field(ge=0, le=10_000)
    request_budget_s: float = Field(gt=0, le=3_600)
    realtime_cart_ttl_s: int = Field(ge=60, le=365 * 86_400)
    realtime_views_ttl_s: int = Field(ge=60, le=365 * 86_400)
    realtime_purchases_ttl_s: int = Field(ge=60, le=365 * 86_400)
    realtime_views_max: int = Field(ge=1, le=1_000)
    realtime_purchases_max: int = Field(ge=1, le=1_000)
    realtime_cart_max: int = Field(ge=1, le=1_000)
    realtime_sessions_max: int = Field(ge=1, le=100_000)
    session_window_s: int = Field(ge=60, le=7 * 86_400)
    events_stream_maxlen: int = Field(ge=10_000)
    drain_batch_size: int = Field(ge=1, le=1_000_000)
    stale_after_s: int = Field(ge=1)
    keep_versions: int = Field(ge=2, le=50)
    demo: bool
    # Secrets have no defaults: `carousel serve` refuses to start without them outside the demo.
    admin_token: SecretStr | None = None
    marketing_token: SecretStr | None = None
    # Optional: a token that opens `/metrics` only (for the Prometheus scrape); the admin token opens it too.
    metrics_token: SecretStr | None = None
    # The store's servers: posting any shopper's events and reading any shopper's list.
    storefront_token: SecretStr | None = None
    # Signs shopper tokens (`carousel.rules.identity`), which a browser sends for its signed-in shopper.
    shopper_token_secret: SecretStr | None = None
    # Salts the digests erased shoppers are remembered by (`carousel.rules.erasure`); required outside the
    # demo, whose salt is public.
    erasure_salt: SecretStr | None = None

    @field_validator("var_dir", "lake_dir", mode="before")
    @classmethod
    def _storage(cls, value: object, info: ValidationInfo) -> Path:
        return storage_path(value, str(info.field_name))

    @field_validator("spark_java_options")
    @classmethod
    def _java_options(cls, value: str) -> str:
        # They reach every Spark JVM's command line: JVM options only, nothing a JVM would take for a class.
        strays = [word for word in value.split() if not word.startswith("-")]
        if strays:
            raise ValueError(f"JVM options start with '-', not {strays[0]!r}")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        # uvicorn ignores an entry it cannot read (and a "*" among others): every client would then share
        # the proxy's address, and its limit.
        if value.strip() == "*":
            return value
        for entry in (part.strip() for part in value.split(",")):
            try:
                ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(
                    f'{entry!r} is not an address or a network (host bits zero); "*" alone trusts every proxy'
                ) from None
        return value

    @model_validator(mode="after")
    def _check_tokens(self) -> Settings:
        for name in (
            "admin_token",
            "marketing_token",
            "metrics_token",
            "storefront_token",
            "shopper_token_secret",
        ):
            token = getattr(self, name)
            if token is not None and len(token.get_secret_value()) < 16:
                raise ValueError(f"CAROUSEL_{name.upper()} must be at least 16 characters")
        return self

    def erasure_salt_value(self) -> str:
        """The erasure salt; the demo's public one when unset in the demo; refused when unset elsewhere."""
        if self.erasure_salt is not None:
            return self.erasure_salt.get_secret_value()
        if self.demo:
            return DEMO_ERASURE_SALT
        raise ValueError(
            "CAROUSEL_ERASURE_SALT is not set: erased shoppers would be remembered by digests anyone can "
            "reverse. Set it (16+ characters, kept secret and never changed) or run the demo."
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order = precedence: explicit arguments, then CAROUSEL_* variables, then the TOML defaults.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def stored_list_length(self) -> int:
        """Items stored per list: the served length plus an overflow that refills a list at read time
        when some of its items became unavailable."""
        return self.list_length + self.list_overflow

    @property
    def runs_dir(self) -> Path:
        return self.var_dir / "runs"

    @property
    def quality_dir(self) -> Path:
        return self.var_dir / "quality"

    @property
    def models_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.var_dir / "reports"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
