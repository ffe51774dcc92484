"""Shared test inputs: a small policy with explicit prices (so costs can be checked by hand)."""

from __future__ import annotations

# local: $3.6/h at 1,000 tok/s -> $1e-6 per completion token, $1e-7 per prompt token.
# openai and the reference: $2 / $8 per million tokens; a prompt-cache read $0.5 on both, a
# cache write $2.5 on the reference (openai's is unset: its input price).
POLICY = """
version: 1
savings:
  reference_model: gpt-4o
  reference_pricing:
    input_usd_per_mtok: 2.0
    output_usd_per_mtok: 8.0
    cache_read_usd_per_mtok: 0.5
    cache_write_usd_per_mtok: 2.5
backends:
  local:
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: m
    self_hosted: true
    pricing: {gpu_usd_per_hour: 3.6, tokens_per_second: 1000}
    capabilities: {context_window: 8000, vision: false, tools: true}
  openai:
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: gpt-4o
    api_key: os.environ/SIM_TEST_OPENAI_KEY
    pricing: {input_usd_per_mtok: 2.0, output_usd_per_mtok: 8.0, cache_read_usd_per_mtok: 0.5}
    capabilities: {context_window: 128000, vision: true, tools: true}
models:
  auto:
    difficulty: {scorer: heuristic, threshold: 0.5__CAP__}
    fallbacks: [openai]
    rules:
      - name: confidential
        when: {headers: {x-data-classification: confidential}}
        route: local
        self_hosted_only: true
      - name: vision
        when: {needs: [vision]}
        route: openai
      - name: long
        when: {exceeds_context_of: local}
        route: openai
      - name: hard
        when: {difficulty: hard}
        route: openai
      - name: everyday
        route: local
"""

HARD = "Prove rigorously, step by step, that the derivative of x^2 is 2x. Derive it formally and show that it holds; analyze the trade-offs."
EASY = "hi"
IMAGE = [
    {"type": "text", "text": "what is this"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
]


def chat(content, **body) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **body}
