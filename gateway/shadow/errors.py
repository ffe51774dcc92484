"""Shadow-evaluation errors. Like the router's, they sit apart from the HTTP hierarchy in
gateway.errors: shadow work runs off the request path (background workers, the CLI), and a
client never sees one.

    ShadowError (ValueError)
    ├── JudgeParseError     the judge's reply holds no verdict in the format asked for
    ├── ShadowStoreError    the record store (PostgreSQL, JSONL file) cannot be written
    └── ShadowSourceError   a record source given to the CLI cannot be read (names file/line)
"""

from __future__ import annotations

__all__ = ["JudgeParseError", "ShadowError", "ShadowSourceError", "ShadowStoreError"]


class ShadowError(ValueError):
    pass


class JudgeParseError(ShadowError):
    pass


class ShadowStoreError(ShadowError):
    pass


class ShadowSourceError(ShadowError):
    pass
