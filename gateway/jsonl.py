"""JSON Lines input, shared by every command that reads one (router train/score, simulate,
threshold calibration): blank lines skipped, errors name the file and line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["iter_json_objects", "read_lines"]


def read_lines(path: str | Path, error: type[Exception], what: str = "file") -> list[bytes]:
    p = Path(path)
    try:
        return p.read_bytes().splitlines()
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}") from exc


def iter_json_objects(
    lines: Iterable[bytes | str], source: str, error: type[Exception]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; ``error`` for one that is not a JSON object."""
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise error(f"{source}:{no}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise error(f"{source}:{no}: each line must be a JSON object")
        yield no, obj
