"""Prometheus metrics of one app instance (its own registry: no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "twofold_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "twofold_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "twofold_http_in_flight", "requests being served", registry=self.registry
        )
        self.stage = Histogram(
            "twofold_pipeline_stage_duration_seconds",
            "time per pipeline stage (retrieve.<name>, fuse, rerank)",
            ["pipeline", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.deadline_stops = Counter(
            "twofold_deadline_stops",
            "requests stopped past their time budget, by the stage not started",
            ["stage"],
            registry=self.registry,
        )
        self.shed = Counter(
            "twofold_shed",
            "requests refused with 429: every pipeline thread busy and the queue full",
            registry=self.registry,
        )
        self.degraded = Counter(
            "twofold_search_degraded",
            "searches answered without a stage (reranker or retriever failed / out of time)",
            ["pipeline"],
            registry=self.registry,
        )
