"""Webhooks: events written in the transaction of the change (outbox), signed deliveries on the
`webhooks` queue, one attempt per job, the SSRF guard, and endpoint management.

What happens, and when:
- `dispatch`: which event a change sends and what it says; called by the code making the change.
- `events`: an event and its deliveries, written in that change's transaction.
- `relay`: delivery jobs enqueued once the transaction commits.

Sending:
- `delivery`: a job's attempts, one per delivery, each target's in its own thread.
- `bulkhead`: how many attempts may wait on one target; the rest wait in its line.
- `sending`: one HTTP POST and what became of it; `signing`: Standard Webhooks headers.
- `url_guard`: which URLs may be registered and which addresses may be dialled.
- `recording`: each attempt logged and its delivery settled; `status`: a delivery's status,
  in the history.
- `failures`: the retry delay and auto-disable; `recovery`: redeliver, and the watchdog's part.

Managing (what routes and pages call):
- `endpoints`, `callbacks`, `signing_secrets` (rotation), `delivery_log`, `health`, `exceptions`.
"""
