"""Scoring essays on an LLM provider at its rate limit: the fleet's limiter, circuit breaker,
gathered batches and token usage."""
