"""OpenAI-compatible HTTP server for the local engine."""

from local_engine.server.app import create_app

__all__ = ["create_app"]
