"""gunicorn settings for `web:` in the Procfile; each can be overridden by the environment."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let one process answer many cheap status polls while another request waits on I/O.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
accesslog = os.environ.get("ACCESS_LOG") or None
# Load the app once in the master so workers share its memory (copy-on-write).
preload_app = False


def on_starting(server) -> None:
    """Give this master's workers one fresh metrics folder, METRICS_DIR/web-<master pid>, which
    its /metrics reads: every worker's samples, none of another gunicorn's on the machine."""
    from pathlib import Path

    from webapp import metrics
    from webapp.config import Config
    from webapp.metrics_server import WEB_DIR_VARIABLE

    folder = metrics.claim_directory(Path(Config().METRICS_DIR), "web")
    os.environ[WEB_DIR_VARIABLE] = str(folder)  # the workers fork from here and inherit it


def on_exit(server) -> None:
    """Remove this master's metrics folder."""
    import shutil

    from webapp.metrics_server import WEB_DIR_VARIABLE

    if os.environ.get(WEB_DIR_VARIABLE):
        shutil.rmtree(os.environ[WEB_DIR_VARIABLE], ignore_errors=True)


# gunicorn's own lines (boot, worker exits) in the app's format (LOG_FORMAT), on stderr.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"scoreline": {"()": "webapp.log_format.formatter_from_environment"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "scoreline",
            "stream": "ext://sys.stderr",
        }
    },
    # The app's own records reach the root logger, which the app factory sets up (LOG_FORMAT).
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        # The app logs each request itself (webapp.http_observer); ACCESS_LOG adds gunicorn's.
        "gunicorn.access": {
            "handlers": ["stderr"],
            "level": "INFO" if accesslog else "WARNING",
            "propagate": False,
        },
    },
}
