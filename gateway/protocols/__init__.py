"""The protocols callers speak, and the one typed request they all become.

``request.Request`` is what validation produces and everything after it reads (routing
features, token estimates, the scorer's messages, the cache key). Codecs for Anthropic's
Messages API and OpenAI's Responses API sit at the pipeline's edges: they decode an inbound
body into a ``Request`` (whose ``body`` is an OpenAI chat body) and encode the answer back.
"""
