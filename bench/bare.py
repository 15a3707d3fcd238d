"""The baseline web app: a bare Flask JSON endpoint, served by the same gunicorn settings."""

from flask import Flask

app = Flask(__name__)


@app.get("/healthz")
@app.get("/bare")
def bare():
    return {"status": "ok"}
