"""Prometheus metrics of one service, served at ``GET /metrics``.

Each service has its own registry, so several services can run in one process (tests)."""

from __future__ import annotations

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import (
    ProcessCollector as _ProcessCollector,
)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        _ProcessCollector(registry=self.registry)
        labels = ["consumer", "message_type"]
        self.handled = Counter(
            "packline_messages_handled", "Messages applied.", labels, registry=self.registry
        )
        self.deduplicated = Counter(
            "packline_messages_deduplicated",
            "Messages skipped because they were applied before (inbox).",
            labels,
            registry=self.registry,
        )
        self.ignored = Counter(
            "packline_messages_ignored",
            "Valid messages of a type this consumer does not handle.",
            labels,
            registry=self.registry,
        )
        self.failed = Counter(
            "packline_messages_failed",
            "Attempts to apply messages that failed (and were retried or dead-lettered).",
            ["consumer", "transient"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "packline_messages_dead_lettered",
            "Messages sent to the dead-letter topic.",
            ["consumer"],
            registry=self.registry,
        )
        self.dead_letter_publish_failures = Counter(
            "packline_dead_letter_publish_failures",
            "Attempts to publish a dead letter that failed (it is then stored in the database).",
            ["consumer"],
            registry=self.registry,
        )
        self.dead_letters_unpublished = Gauge(
            "packline_dead_letters_unpublished",
            "Dead letters kept in the database whose reference is not on the topic yet.",
            registry=self.registry,
        )
        self.fetch_failures = Counter(
            "packline_consumer_fetch_failures",
            "Fetches from the broker that raised; the partitions are read again from the last"
            " commit.",
            ["consumer"],
            registry=self.registry,
        )
        self.batch_failures = Counter(
            "packline_consumer_batch_failures",
            "Batches abandoned by an unexpected error; they are read again, nothing is skipped.",
            ["consumer"],
            registry=self.registry,
        )
        self.stalled_partitions = Gauge(
            "packline_consumer_stalled_partitions",
            "Partitions of this replica with records waiting and no commit for the stall time.",
            ["consumer"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "packline_batch_seconds",
            "Time to apply one batch of messages, retries included.",
            ["consumer"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = Histogram(
            "packline_batch_size",
            "Messages per batch.",
            ["consumer"],
            registry=self.registry,
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
        )
        self.consumer_lag = Gauge(
            "packline_consumer_lag",
            "Records in a partition after the consumer group's committed offset (from the"
            " broker's end offsets, measured every few seconds, with or without progress).",
            ["consumer", "topic", "partition"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "packline_outbox_backlog", "Outbox rows not yet published.", registry=self.registry
        )
        self.outbox_oldest_age = Gauge(
            "packline_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
            registry=self.registry,
        )
        self.outbox_published = Counter(
            "packline_outbox_published", "Outbox rows published.", registry=self.registry
        )
        self.relay_active = Gauge(
            "packline_outbox_relay_active",
            "1 on the replica whose relay holds the leader lock.",
            registry=self.registry,
        )

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
