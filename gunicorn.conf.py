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
