"""A scripted OpenAI-compatible upstream that plays both the shadow reference and the judge.

- A request whose system prompt is one of our judge prompts gets a verdict: single mode,
  ``SCORE: 9`` when the graded reply contains ``GOOD`` else ``SCORE: 4``; pairwise, the reply
  containing ``GOOD`` wins (``TIE`` when both or neither do). A conversation containing
  ``UNPARSABLE`` gets a reply without any verdict line.
- Any other chat request is answered ``GOOD answer: <last user text>`` (the reference).
Requests are recorded and faults applied through ``MockControl`` like the other mocks.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from gateway.shadow.judge import PAIRWISE_SYSTEM, SINGLE_SYSTEM
from tests.support.servers import MockControl, RecordedRequest, content_text, public_headers

__all__ = ["create_app", "is_judge_request"]


def is_judge_request(body: dict) -> bool:
    msgs = body.get("messages") or []
    return bool(msgs) and msgs[0].get("content") in (SINGLE_SYSTEM, PAIRWISE_SYSTEM)


def _section(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)
    return m.group(1) if m else ""


def _verdict(body: dict) -> str:
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    if "UNPARSABLE" in _section(user, "conversation"):
        return "I cannot decide."
    if system == SINGLE_SYSTEM:
        return "Brief reasoning.\nSCORE: " + ("9" if "GOOD" in _section(user, "reply") else "4")
    a, b = "GOOD" in _section(user, "reply_A"), "GOOD" in _section(user, "reply_B")
    return "Brief reasoning.\nVERDICT: " + ("A" if a and not b else "B" if b and not a else "TIE")


def cached_judge_tokens(prompt_tokens: int) -> int:
    """How many of a judge call's prompt tokens the mock reports read from the prompt cache."""
    return prompt_tokens // 2


def create_app(control: MockControl) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        control.record(
            RecordedRequest(
                request.method, request.path, public_headers(request.headers), body, raw, True
            )
        )
        fault = control.take_fault()
        if control.delay_s or (fault and fault.delay_s):
            await asyncio.sleep(control.delay_s + (fault.delay_s if fault else 0.0))
        if fault is not None and fault.status is not None:
            return web.json_response({"error": {"message": "mock failure"}}, status=fault.status)
        if is_judge_request(body):
            text = _verdict(body)
        else:
            users = [m for m in body["messages"] if m.get("role") == "user"]
            text = "GOOD answer: " + content_text(users[-1].get("content"))
        words = sum(len(content_text(m.get("content")).split()) for m in body["messages"])
        usage = {"prompt_tokens": words, "completion_tokens": len(text.split())}
        if is_judge_request(body):  # the judge's instructions: a prefix the provider caches
            usage["prompt_tokens_details"] = {"cached_tokens": cached_judge_tokens(words)}
        return web.json_response(
            {
                "id": "chatcmpl-judge",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body.get("model", "judge"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage | {"total_tokens": words + len(text.split())},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app
