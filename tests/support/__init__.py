"""Test support: mock provider servers on loopback (OpenAI-compatible, Anthropic Messages)."""
