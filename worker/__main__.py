"""`python -m worker`: an RQ worker with the scheduler on, listening on every queue the app uses.

The app context is pushed once here, so every job (in the forked work horse) runs inside it.
"""

from __future__ import annotations

import argparse
import logging
import os

from rq import Worker

from webapp import create_app
from webapp.extensions import db
from webapp.queues import QUEUE_NAMES, get_redis


def main(argv: list[str] | None = None) -> None:
    """Start a worker; `--burst` drains the queues and exits."""
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's own)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app()
    app.app_context().push()
    engine = db.engine
    # A forked work horse must not share the parent's database sockets.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    worker = Worker(list(QUEUE_NAMES), connection=get_redis(app), name=args.name)
    worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")


if __name__ == "__main__":
    main()
