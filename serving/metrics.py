"""Prometheus metrics of the API, exposed at `GET /metrics`.

Latency histograms by route and list source (personal, segment, global, fallback, ...), and counters of
fallbacks served and circuit-breaker openings, so a dashboard shows both how fast the API is and how
often it is answering without Redis.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY = Histogram(
    "carousel_request_seconds",
    "Time to answer a request, by route and list source",
    ["route", "source"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "carousel_fallbacks_total",
    "Responses served from a fallback because Redis could not be read, by fallback kind",
    ["kind"],
    registry=REGISTRY,
)
BREAKER_OPENED = Counter(
    "carousel_breaker_opened_total", "Times the Redis circuit breaker opened", registry=REGISTRY
)
RATE_LIMITED = Counter(
    "carousel_events_rate_limited_total",
    "Event requests refused with 429: a browser over events_browser_requests_per_minute",
    registry=REGISTRY,
)
AUTH_REFUSED = Counter(
    "carousel_auth_refused_total",
    "Tokens refused: wrong_token (401), or locked_out (429, the address is past auth_failures_per_minute)",
    ["reason"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge("carousel_breaker_open", "1 while the Redis circuit breaker is open", registry=REGISTRY)
