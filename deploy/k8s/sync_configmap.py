"""Rewrite the policy in gateway-configmap.yaml from policies/default.yaml (run after editing it).

tests/deploy/test_k8s.py fails while the two differ.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGMAP = HERE / "gateway-configmap.yaml"
POLICY = HERE.parent.parent / "policies" / "default.yaml"
MARKER = "  policy.yaml: |\n"


def render(configmap_text: str, policy_text: str) -> str:
    head, sep, _ = configmap_text.partition(MARKER)
    if not sep:
        raise SystemExit(f"{CONFIGMAP}: no line {MARKER.strip()!r} to put the policy under")
    body = "".join(f"    {line}" if line.strip() else "\n" for line in policy_text.splitlines(True))
    return head + sep + body


def main() -> None:
    CONFIGMAP.write_text(
        render(CONFIGMAP.read_text(encoding="utf-8"), POLICY.read_text(encoding="utf-8")),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
