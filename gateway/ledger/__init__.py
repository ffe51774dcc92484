"""The spend ledger: one PostgreSQL row per finished request, written off the request path."""

from gateway.ledger.row import LedgerRow, new_request_id
from gateway.ledger.writer import LedgerWriter

__all__ = ["LedgerRow", "LedgerWriter", "new_request_id"]
