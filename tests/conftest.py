"""Test-suite wiring.

Tests run with ``--import-mode=importlib`` (see pyproject), so test files in different
folders may share a basename. Harness modules next to the tests (``redis_harness``,
``server_harness``, ...) are imported by plain name: their folders go on ``sys.path`` here,
and the repository root too, for ``tests.support``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in [
    HERE.parent,
    *(p for p in sorted(HERE.iterdir()) if p.is_dir() and not p.name.startswith("_")),
]:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
