"""The scoring core: stages, rubric, retrieval, question generation and the knowledge base.

Framework-free: imports no Flask, SQLAlchemy, Redis or RQ.
"""
