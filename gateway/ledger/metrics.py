"""The ledger's Prometheus series (registered on the gateway's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metric_series import PREFIX, Series

__all__ = ["LedgerMetrics"]


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        s = Series(registry, PREFIX + "ledger_")
        self.rows = s.counter(
            "rows_total",
            "Ledger rows by what happened to them: written (to PostgreSQL), spooled (to the local "
            "file while the database was slow or down), replayed (from the spool).",
            ["result"],
        )
        self.write_failures = s.counter(
            "write_failures_total", "Failed ledger writes (connect or insert)."
        )
        self.buffered = s.gauge(
            "buffered_rows", "Rows in memory waiting for the next batch.", mode="livesum"
        )
        self.spooled = s.gauge(
            "spooled_rows",
            "Rows in this process's spool file, waiting for the database.",
            mode="livesum",
        )
        self.lag = s.gauge(
            "lag_seconds",
            "Age of the oldest row not yet in the database (0: all written).",
            mode="livemax",
        )
        self.written = self.rows.labels("written")
        self.spooled_total = self.rows.labels("spooled")
        self.replayed = self.rows.labels("replayed")
