"""The confidence cascade: self-hosted first, escalate when its own answer looks unsure."""

from gateway.cascade.confidence import answer_confidence, token_logprobs

__all__ = ["answer_confidence", "token_logprobs"]
