"""Bodies with no chat form: routed by the same policy, sent only to backends taking them natively.

The official ``anthropic`` SDK and the ``openai`` SDK's Responses client -> the real gateway ->
loopback mocks: two Anthropic Messages mocks (native), an OpenAI mock speaking Responses
(``native_protocols: [responses]``), and two chat-only OpenAI mocks (the self-hosted backend and
a proprietary one). Each rule puts the chat-only backends first, so a body that translated would
go there; one that does not (a user turn of only a document and a search result, an
``input_file``-only message) reaches only the native mock (byte for byte where the caller's model
is the upstream's), and the chat mocks count zero requests, also when the native backend fails.
With no native candidate the caller gets a 400 in its own protocol's shape naming the part.
"""

from __future__ import annotations

import copy

import anthropic
import openai
import pytest

from tests.gateway.native_support import eventually, ledger_rows, metric, serving
from tests.gateway.pg_harness import fresh_database
from tests.support.mock_anthropic import count_of, running_mock_anthropic
from tests.support.mock_openai import running_mock_openai
from tests.support.policy import (
    anthropic_backend,
    client_key,
    local_backend,
    openai_backend,
    policy_yaml,
)

KEY = "gw-untranslatable-key-ALPHA"
UP_KEY = "sk-ant-untranslatable-upstream-SECRET"
GPT_KEY = "sk-gpt-untranslatable-upstream-SECRET"

CONFIDENTIAL = {"headers": {"x-data-classification": "confidential"}}
EU = {"headers": {"x-data-residency": "eu"}}
ONE_TRY = {"max_attempts": 1}


def _policy(*, ns: str, db: str, spool: str, **url: str) -> str:
    """Each rule names chat-only backends first: what translates goes there."""
    priced = {"input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}
    claude = {"api_key": "os.environ/UP_KEY", "pricing": priced}
    return policy_yaml(
        auth={"keys": [client_key("alpha", "KEY", "alpha")]},
        cache={"enabled": True, "namespace": ns},
        state_redis_url="redis://127.0.0.1:6379/0",
        ledger={"database_url": db, "spool_dir": spool, "flush_interval_s": 0.05},
        data_rules=[
            {
                "name": "confidential-stays-home",
                "when": CONFIDENTIAL,
                "only": {"self_hosted_only": True},
                "fallbacks": ["local"],
            },
            {
                "name": "eu-residency",
                "when": EU,
                "only": {"require": {"region": "eu"}},
                "fallbacks": ["local"],
            },
        ],
        backends={
            "local": local_backend(
                url["local"],
                labels={"region": "eu"},
                capabilities={"context_window": 32768, "tools": True, "vision": True},
                retry=ONE_TRY,
            ),
            "gpt": openai_backend(  # proprietary, chat only
                url["gpt"],
                api_key="os.environ/GPT_KEY",
                capabilities={"tools": True, "vision": True},
                retry=ONE_TRY,
            ),
            "resp": openai_backend(  # speaks Responses
                url["resp"],
                model="gpt-5-mini",
                api_key="os.environ/GPT_KEY",
                native_protocols=["responses"],
                retry=ONE_TRY,
            ),
            "claude": anthropic_backend(
                url["claude"],
                **claude,
                labels={"origin": "us"},
                retry={"max_attempts": 2, "backoff_base_s": 0, "backoff_max_s": 0},
                circuit_breaker={"failure_threshold": 100},
            ),
            "claude-eu": anthropic_backend(  # the same model on another mock, in the EU
                url["claude_eu"], **claude, labels={"region": "eu"}, retry=ONE_TRY
            ),
        },
        models={
            "auto": {
                "rules": [
                    {"name": "home", "when": _route("home"), "route": ["local", "gpt"]},
                    {
                        "name": "natives",
                        "when": _route("natives"),
                        "route": ["claude", "local", "claude-eu"],
                    },
                    {"name": "everyday", "route": ["local", "gpt", "claude", "resp"]},
                ]
            },
            # the upstream's own name: a native body goes up as the caller's bytes
            "claude-sonnet-4-5": {"rules": [{"name": "named", "route": ["local", "claude"]}]},
        },
    )


def _route(name: str) -> dict:
    return {"headers": {"x-route": name}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with (
        fresh_database() as db,
        running_mock_openai() as (local, lctl),
        running_mock_openai() as (gpt, gctl),
        running_mock_openai() as (resp, rctl),
        running_mock_anthropic() as (claude, actl),
        running_mock_anthropic() as (claude_eu, ectl),
    ):
        gctl.api_key = rctl.api_key = GPT_KEY
        actl.api_key = ectl.api_key = UP_KEY
        env = {"KEY": KEY, "UP_KEY": UP_KEY, "GPT_KEY": GPT_KEY}
        urls = {"local": local, "gpt": gpt, "resp": resp, "claude": claude}
        tmp = tmp_path_factory.mktemp("untranslatable")
        with serving(tmp, db, env, _policy, claude_eu=claude_eu, **urls) as url:
            yield {
                "url": url,
                "db": db,
                "local": lctl,
                "gpt": gctl,
                "resp": rctl,
                "claude": actl,
                "claude-eu": ectl,
            }


@pytest.fixture(autouse=True)
def _fresh(stack):
    for name in ("local", "gpt", "resp", "claude", "claude-eu"):
        stack[name].reset()


def _counts(stack) -> dict[str, int]:
    return {n: len(stack[n].requests) for n in ("local", "gpt", "resp", "claude", "claude-eu")}


def _untranslated(stack, outcome: str) -> float:
    return metric(
        stack["url"], "gateway_untranslated_requests_total", protocol="anthropic", outcome=outcome
    )


def _anthropic(stack, route: str | None = None, **kw) -> anthropic.Anthropic:
    headers = {"x-route": route} if route else {}
    headers |= kw.pop("headers", {})
    return anthropic.Anthropic(
        base_url=stack["url"], api_key=KEY, max_retries=0, default_headers=headers, **kw
    )


def _openai(stack, route: str | None = None, **headers: str) -> openai.OpenAI:
    hdrs = {"x-route": route, **headers} if route else headers
    return openai.OpenAI(
        base_url=stack["url"] + "/v1", api_key=KEY, max_retries=0, default_headers=hdrs
    )


# A conversation whose first user turn is only a document (a Files API id, with citations)
# and a search result: chat completions has no form for either, and the turn would vanish.
DOCUMENT_TURN = {
    "role": "user",
    "content": [
        {
            "type": "document",
            "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"},
            "title": "Q3 report",
            "citations": {"enabled": True},
            "cache_control": {"type": "ephemeral"},
        },
        {
            "type": "search_result",
            "source": "https://example.invalid/q3",
            "title": "Q3 numbers",
            "content": [{"type": "text", "text": "Revenue grew by nine percent."}],
            "citations": {"enabled": True},
        },
    ],
}
DOC_KW = {
    "model": "auto",
    "max_tokens": 256,
    "system": "Answer from the documents.",
    "messages": [
        DOCUMENT_TURN,
        {"role": "assistant", "content": "I have read both."},
        {"role": "user", "content": "summarize the report"},
    ],
}
TRANSLATABLE_KW = {**DOC_KW, "messages": DOC_KW["messages"][1:]}
PART = "messages[0]"  # what the gateway names as having no chat form


def _kw(base: dict = DOC_KW, **extra) -> dict:
    return {**copy.deepcopy(base), **extra}


# ---------------------------------------------------------------- Anthropic Messages


@pytest.mark.parametrize("stream", [False, True])
def test_untranslatable_messages_reach_only_the_native_backend(stack, stream):
    """The rule's first candidates are chat-only: a body that translates goes there (control),
    one that does not goes to the native Anthropic backend, untouched but for the model."""
    native0 = _untranslated(stack, "native")
    with _anthropic(stack) as client:
        control = client.messages.with_raw_response.create(**_kw(TRANSLATABLE_KW))
        assert control.headers["x-gateway-backend"] == "local"
        assert "x-gateway-untranslated" not in control.headers
        assert _counts(stack)["local"] == 1
        stack["local"].reset()
        if stream:
            with client.messages.stream(**_kw()) as s:
                kinds = [e.type for e in s]
                msg = s.get_final_message()
                headers = s.response.headers
            assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        else:
            raw = client.messages.with_raw_response.create(**_kw())
            msg, headers = raw.parse(), raw.headers
    assert msg.content[0].text == "echo: summarize the report"
    assert headers["x-gateway-backend"] == "claude" and headers["x-gateway-native"] == "anthropic"
    assert headers["x-gateway-untranslated"] == PART
    assert headers["x-gateway-route-reason"] == "everyday"
    assert _counts(stack) == {"local": 0, "gpt": 0, "resp": 0, "claude": 1, "claude-eu": 0}
    [rec] = stack["claude"].requests
    sent = dict(rec.body)
    assert sent.pop("model") == "claude-sonnet-4-5" and sent.pop("stream", False) is stream
    assert sent == {k: v for k, v in DOC_KW.items() if k != "model"}  # the document, as sent
    assert eventually(lambda: _untranslated(stack, "native") == native0 + 1)


def test_native_body_goes_up_byte_for_byte(stack):
    """Where the caller names the upstream's model, the native path sends the caller's bytes."""
    sent: list[bytes] = []

    def keep(request) -> None:  # an httpx2.Request: the SDK's own HTTP client
        sent.append(request.read())

    http = anthropic.DefaultHttpxClient(event_hooks={"request": [keep]})
    with _anthropic(stack, http_client=http) as client:
        raw = client.messages.with_raw_response.create(**_kw(model="claude-sonnet-4-5"))
    assert raw.headers["x-gateway-backend"] == "claude" and raw.headers["x-gateway-native"]
    [rec] = stack["claude"].requests
    assert rec.raw == sent[0] and b"file_011CNha8iCJcU1wXNR6q4V8w" in rec.raw
    assert _counts(stack)["local"] == 0


def test_no_native_candidate_is_a_clear_error_in_anthropics_shape(stack):
    refused0 = _untranslated(stack, "refused")
    with _anthropic(stack, route="home") as client:
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(**_kw())
    body = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    assert message.startswith(f"{PART}: a user turn of only document, search_result blocks")
    assert "(local, gpt)" in message and "takes Anthropic Messages natively" in message
    assert e.value.response.headers["x-gateway-untranslated"] == PART
    assert _counts(stack) == dict.fromkeys(("local", "gpt", "resp", "claude", "claude-eu"), 0)
    assert eventually(lambda: _untranslated(stack, "refused") == refused0 + 1)
    assert eventually(
        lambda: metric(stack["url"], "gateway_errors_total", error_type="UntranslatableError")
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_native_backend_never_falls_back_to_translation(stack, stream):
    """claude fails both its attempts (retries stay on it): the caller gets the failure, and
    the chat backends, first in the rule, are never sent the body."""
    stack["claude"].fail_next(2, status=500)
    with _anthropic(stack) as client:
        with pytest.raises(anthropic.InternalServerError) as e:
            if stream:
                with client.messages.stream(**_kw()) as s:
                    s.get_final_message()
            else:
                client.messages.create(**_kw())
    assert e.value.body["type"] == "error" and UP_KEY not in str(e.value.body)
    assert e.value.response.headers["x-gateway-backend"] == "claude"
    assert _counts(stack) == {"local": 0, "gpt": 0, "resp": 0, "claude": 2, "claude-eu": 0}


def test_fallback_goes_to_the_next_native_backend_only(stack):
    stack["claude"].fail_next(2, status=503)
    with _anthropic(stack, route="natives") as client:
        raw = client.messages.with_raw_response.create(**_kw())
    assert raw.headers["x-gateway-backend"] == "claude-eu"
    assert raw.parse().content[0].text == "echo: summarize the report"
    assert _counts(stack) == {"local": 0, "gpt": 0, "resp": 0, "claude": 2, "claude-eu": 1}


@pytest.mark.parametrize(
    ("marker", "served_by"),
    [(CONFIDENTIAL["headers"], None), (EU["headers"], "claude-eu")],
    ids=["confidential", "eu-residency"],
)
def test_data_rules_stay_absolute(stack, marker, served_by):
    """Confidential: only the self-hosted backend is allowed, and it would need translation:
    refused, nothing sent anywhere. EU residency: the EU native backend serves it, never the
    US one the rule names first."""
    with _anthropic(stack, route="natives", headers=marker) as client:
        if served_by is None:
            with pytest.raises(anthropic.BadRequestError) as e:
                client.messages.create(**_kw())
            assert "(local)" in e.value.body["error"]["message"]
        else:
            raw = client.messages.with_raw_response.create(**_kw())
            assert raw.headers["x-gateway-backend"] == served_by
    counts = _counts(stack)
    assert counts.pop(served_by, 0) == (1 if served_by else 0)
    assert set(counts.values()) == {0}


def test_count_tokens_asks_the_native_backend_it_would_go_to(stack):
    kw = {k: v for k, v in DOC_KW.items() if k != "max_tokens"}
    with _anthropic(stack) as client:
        raw = client.messages.with_raw_response.count_tokens(**copy.deepcopy(kw))
        assert raw.headers["x-gateway-token-count"] == "upstream"
        assert raw.headers["x-gateway-backend"] == "claude"
        [rec] = stack["claude"].requests
        assert raw.parse().input_tokens == count_of(rec.body)
    with _anthropic(stack, route="home") as client:  # nothing would take it: the estimate
        raw = client.messages.with_raw_response.count_tokens(**copy.deepcopy(kw))
    assert raw.headers["x-gateway-token-count"] == "estimate" and raw.parse().input_tokens > 0
    assert _counts(stack) == {"local": 0, "gpt": 0, "resp": 0, "claude": 1, "claude-eu": 0}


def test_ledger_rows_say_what_happened(stack):
    with _anthropic(stack) as client:
        ok = client.messages.with_raw_response.create(**_kw())
    with _anthropic(stack, route="home") as client:
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(**_kw())
    ids = [ok.headers["x-gateway-request-id"], e.value.response.headers["x-gateway-request-id"]]
    rows = ledger_rows(stack["db"], ids)
    served, refused = (rows[i.replace("-", "")] for i in ids)
    assert (served["protocol"], served["backend"], served["status"]) == ("anthropic", "claude", 200)
    assert served["rule"] == "everyday" and served["prompt_tokens"] > 0
    assert (refused["protocol"], refused["backend"], refused["status"]) == (
        "anthropic",
        "none",
        400,
    )
    assert refused["rule"] == "home" and refused["cost_usd"] == 0


# ---------------------------------------------------------------- OpenAI Responses


FILE_INPUT = {
    "model": "auto",
    "input": [
        {"role": "user", "content": [{"type": "input_file", "file_id": "file-q3report"}]},
        {"role": "user", "content": "what does the file say?"},
    ],
}


def _responses(client: openai.OpenAI, stream: bool, **kw):
    if not stream:
        raw = client.responses.with_raw_response.create(**kw)
        return raw.parse(), raw.headers
    events = client.responses.create(stream=True, **kw)
    final = [e.response for e in events if e.type == "response.completed"]
    return final[0], events.response.headers


@pytest.mark.parametrize("stream", [False, True])
def test_untranslatable_responses_reach_only_the_native_backend(stack, stream):
    """A message of only an ``input_file`` goes to the backend speaking Responses; its stored
    conversation has no chat form either, so the next turn goes there too (as items), though
    it translates by itself."""
    with _openai(stack) as client:
        first, headers = _responses(client, stream, **copy.deepcopy(FILE_INPUT))
        assert first.output_text == "echo: what does the file say?"
        assert headers["x-gateway-backend"] == "resp"
        assert headers["x-gateway-native"] == "responses"
        assert headers["x-gateway-untranslated"] == "input[0].content"
        second, headers = _responses(
            client, stream, model="auto", input="and the margins?", previous_response_id=first.id
        )
    assert second.output_text == "echo: and the margins?"
    assert headers["x-gateway-untranslated"] == "previous_response_id"
    assert _counts(stack) == {"local": 0, "gpt": 0, "resp": 2, "claude": 0, "claude-eu": 0}
    items = stack["resp"].requests[1].body["input"]
    assert items[0] == FILE_INPUT["input"][0]  # the file, kept in the stored conversation
    assert items[-1] == {"role": "user", "content": "and the margins?"}


def test_no_native_candidate_is_a_clear_error_in_openais_shape(stack):
    with _openai(stack, route="home") as client:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(**copy.deepcopy(FILE_INPUT))
    err = e.value.body
    assert err["code"] == "untranslatable" and err["param"] == "input[0].content"
    assert "input_file" in err["message"] and "takes OpenAI Responses natively" in err["message"]
    assert _counts(stack) == dict.fromkeys(("local", "gpt", "resp", "claude", "claude-eu"), 0)


def test_a_failing_native_responses_backend_never_falls_back(stack):
    stack["resp"].fail_next(1, status=500)
    with _openai(stack) as client:
        with pytest.raises(openai.InternalServerError):
            client.responses.create(**copy.deepcopy(FILE_INPUT))
    assert _counts(stack) == {"local": 0, "gpt": 0, "resp": 1, "claude": 0, "claude-eu": 0}
