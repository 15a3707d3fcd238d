"""Webhooks: events written in the transaction of the change (outbox), signed deliveries on the
`webhooks` queue, one attempt per job, the SSRF guard, and endpoint management.

- `events`: what happened, as messages with their deliveries; the after-commit enqueue.
- `delivery`: one attempt, its log, the retry schedule, auto-disable, redeliver and recover.
- `signing`: Standard Webhooks headers.
- `url_guard`: which URLs may be registered and which addresses may be dialled.
- `endpoints`: creating, changing and reading endpoints and callbacks.
"""
