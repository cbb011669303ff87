"""Ingest metrics (stable names); counters only read by the Prometheus exporter."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INGEST_MESSAGES = Counter(
    "aidlink_ingest_messages",
    "MQTT messages handled by the gateway, by result (stored, dead_letter, ignored)",
    ["result"],
)
OBSERVATIONS_STORED = Counter(
    "aidlink_observations_stored", "Observation rows newly stored (duplicates not counted)"
)
DEAD_LETTERS = Counter(
    "aidlink_dead_letters", "Messages set aside in the dead-letter table, by reason", ["reason"]
)
INGEST_LATENCY = Histogram(
    "aidlink_ingest_latency_seconds",
    "From receipt by the gateway to commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_ROWS = Histogram(
    "aidlink_batch_rows",
    "Messages per committed batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
DB_FAILURES = Counter(
    "aidlink_ingest_db_failures", "Batches whose database write failed and was retried"
)
