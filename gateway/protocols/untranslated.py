"""The routing view of a caller's body that has no chat form (``UntranslatableError``).

Routing needs little of a request: its estimated prompt tokens, whether it offers tools or
carries images, and the text the difficulty scorer reads. This walk takes those from a
Messages or Responses body as sent, whatever its blocks: it never raises. Text is read from
``text``, ``thinking``, ``arguments``, ``output``, ``content`` and ``summary`` of any block, at
any depth (so tool results and search results count, and block kinds added later too); a
document's plain-text source is text; a tool call's ``input`` counts as its JSON; images, and
attachments the gateway cannot read (a PDF, a file id), count as ``TOKENS_PER_IMAGE`` each
(see ``gateway.routing.tokens``).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import UntranslatableError
from gateway.protocols.request import Protocol, Request
from gateway.routing.tokens import TOKENS_PER_MESSAGE, estimate

__all__ = ["request"]

IMAGES = frozenset({"image", "input_image", "image_url"})
ATTACHMENTS = frozenset({"document", "input_file", "input_audio", "container_upload"})
TEXT_KEYS = ("text", "thinking", "arguments", "output", "content", "summary")
RESULTS = frozenset({"tool_result", "function_call_output"})  # read as a tool turn's text
ROLES = frozenset({"user", "assistant", "system", "developer"})


class _Tally:
    __slots__ = ("texts", "chars", "images", "attachments")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.chars = 0  # of what was counted and let go (a turn's), and of tool inputs
        self.images = 0
        self.attachments = 0

    def add(self, text: str) -> None:
        self.texts.append(text)


def _kind(b: dict[str, Any]) -> str | None:
    kind = b.get("type")
    return kind if isinstance(kind, str) else None  # a list or object type: unhashable


def _walk(v: Any, t: _Tally) -> None:
    if isinstance(v, str):
        t.add(v)
    elif isinstance(v, list):
        for x in v:
            _walk(x, t)
    elif isinstance(v, dict):
        _block(v, t)


def _block(b: dict[str, Any], t: _Tally, content: bool = True) -> None:
    kind = _kind(b)
    if kind in IMAGES:
        t.images += 1
        return
    if kind in ATTACHMENTS:
        src = b.get("source")
        src = src if isinstance(src, dict) else {}
        if src.get("type") == "text" and isinstance(src.get("data"), str):
            t.add(src["data"])
        elif src.get("type") == "content":
            _walk(src.get("content"), t)
        else:
            t.attachments += 1
        return
    for key in TEXT_KEYS:
        v = b.get(key)
        if isinstance(v, str | list) and (content or key != "content"):
            _walk(v, t)
    tool_input = b.get("input")  # a tool call's (a Responses item's ``input`` is not a dict)
    if isinstance(tool_input, dict):
        t.chars += len(repr(tool_input))


def _turn(item: Any, out: list[dict[str, Any]], t: _Tally) -> None:
    """One message or item as chat messages of its text: its own role's, and a tool turn's
    for the results it carries (the scorer reads user turns, not tool output)."""
    if not isinstance(item, dict):
        return
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        role = "tool" if _kind(item) in RESULTS else "assistant"  # calls, reasoning ...
    own, results = _Tally(), _Tally()
    content = item.get("content")
    if isinstance(content, list):
        for b in content:
            _walk(b, results if isinstance(b, dict) and _kind(b) in RESULTS else own)
        _block(item, own, content=False)
    else:
        _block(item, own)
    out.append({"role": "system" if role == "developer" else role, "content": "\n".join(own.texts)})
    if results.texts:
        out.append({"role": "tool", "content": "\n".join(results.texts)})
    for tally in (own, results):
        t.chars += tally.chars + sum(len(s) for s in tally.texts)
        t.images += tally.images
        t.attachments += tally.attachments


def request(
    protocol: Protocol,
    body: dict[str, Any],
    raw: bytes,
    why: UntranslatableError,
    history: list[dict[str, Any]] | None = None,
) -> Request:
    """The ``Request`` of a well-formed ``body`` (its ``model`` a string) that does not
    translate; ``history``: a stored conversation it continues, as Responses items."""
    t = _Tally()
    msgs: list[dict[str, Any]] = []
    system = body.get("system") if protocol == "anthropic" else body.get("instructions")
    if isinstance(system, str | list):
        _turn({"role": "system", "content": system}, msgs, t)
    inp = body.get("messages") if protocol == "anthropic" else body.get("input")
    items = (history or []) + (inp if isinstance(inp, list) else [])
    if isinstance(inp, str):
        items.append({"role": "user", "content": inp})
    for item in items:
        _turn(item, msgs, t)
    needs = set()
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        needs.add("tools")
        t.chars += len(repr(tools))
    if t.images:
        needs.add("vision")
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    fmt_kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt_kind in ("json_schema", "json_object"):
        needs.add(fmt_kind)
    chars = t.chars
    max_out = body.get("max_tokens" if protocol == "anthropic" else "max_output_tokens")
    metadata = body.get("metadata")
    model = body["model"]
    req = Request(
        "chat",
        model,
        {"model": model, "messages": msgs},
        protocol=protocol,
        native=body,
        native_raw=raw,
        stream=body.get("stream") is True,
        max_output_tokens=max_out if type(max_out) is int and max_out > 0 else 0,
        prompt_tokens=estimate(chars, TOKENS_PER_MESSAGE * len(msgs), t.images + t.attachments),
        images=t.images,
        needs=frozenset(needs),
        temperature=body.get("temperature"),
        untranslatable=why,
    )
    if isinstance(metadata, dict):
        req.metadata = metadata
    return req
