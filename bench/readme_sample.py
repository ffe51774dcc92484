"""The README's simulator sample output, generated so it cannot go stale.

    python bench/readme_sample.py            # print the block
    python bench/readme_sample.py --write    # replace it in README.md

The block is ``gateway simulate --policy policies/default.yaml --requests
policies/sample-requests.jsonl`` (learned scorer, every configured backend counted as enabled)
from "Per backend" to the savings line, between the README's ``simulate-sample`` markers.
tests/simulate/test_readme_sample.py fails when the README's copy differs from a fresh run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- simulate-sample:start -->", "<!-- simulate-sample:end -->"
_BLOCK = re.compile(re.escape(START) + r"\n(.*?)\n?" + re.escape(END), re.S)


def sample_block() -> str:
    sys.path.insert(0, str(ROOT))
    from gateway.simulate.run import simulate
    from gateway.simulate.table import render_table

    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    rep = simulate(
        ROOT / "policies/default.yaml",
        ROOT / "policies/sample-requests.jsonl",
        env=env,
        all_backends=True,
        progress=False,
    )
    text = render_table(rep)
    lines = text.splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("Per backend"))
    last = next(i for i, x in enumerate(lines) if x.strip().startswith("savings:"))
    kept = [x for x in lines[first : last + 1] if x.strip() and not set(x.strip()) <= {"-", " "}]
    return "\n".join("    " + x for x in kept)


def readme_block() -> str | None:
    m = _BLOCK.search(README.read_text(encoding="utf-8"))
    return m.group(1) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the block in README.md")
    args = ap.parse_args()
    block = sample_block()
    if not args.write:
        print(block)
        return 0
    text = README.read_text(encoding="utf-8")
    if not _BLOCK.search(text):
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    README.write_text(_BLOCK.sub(lambda _m: f"{START}\n{block}\n{END}", text), encoding="utf-8")
    print("README.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
