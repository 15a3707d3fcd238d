"""Scoreline's RQ worker: `python -m worker`."""
