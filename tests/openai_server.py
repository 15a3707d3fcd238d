"""The OpenAI-compatible provider double, shared with the benchmarks (bench/openai_double.py)."""

from bench.openai_double import OpenAICompatibleServer, ProviderLimits, Reply, rubric_reply

__all__ = ["OpenAICompatibleServer", "ProviderLimits", "Reply", "rubric_reply"]
