"""The ledger's Prometheus series (registered on the gateway's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["LedgerMetrics"]


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "gateway_ledger_"
        self.rows = Counter(
            p + "rows_total",
            "Ledger rows by what happened to them: written (to PostgreSQL), spooled (to the local "
            "file while the database was slow or down), replayed (from the spool).",
            ["result"],
            registry=registry,
        )
        self.write_failures = Counter(
            p + "write_failures_total",
            "Failed ledger writes (connect or insert).",
            registry=registry,
        )
        self.buffered = Gauge(
            p + "buffered_rows",
            "Rows in memory waiting for the next batch.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spooled = Gauge(
            p + "spooled_rows",
            "Rows in this process's spool file, waiting for the database.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.lag = Gauge(
            p + "lag_seconds",
            "Age of the oldest row not yet in the database (0: all written).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.written = self.rows.labels("written")
        self.spooled_total = self.rows.labels("spooled")
        self.replayed = self.rows.labels("replayed")
