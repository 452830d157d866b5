"""Alert secrets inside Airflow: the SMTP login and the webhook URL come from the Airflow connections
``recsys_smtp`` and ``recsys_webhook`` (here ``AIRFLOW_CONN_*`` environment connections, the first of
Airflow's secrets backends), falling back to ``RECSYS_NOTIFY_*``; never in a log.

The failure callback (``RecsysFailureNotifier``) delivers to real local servers: an SMTP server that
requires a login (aiosmtpd) and an HTTP server.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk.log import redact
from recsys_airflow import runtime
from recsys_airflow.notifiers import RecsysFailureNotifier

from recsys.config import ConfigError, Settings

PASSWORD = "s3cret-pass-4f1d"
TOKEN = "T0KEN-b7e2a1"
CONTEXT = {
    "ti": SimpleNamespace(dag_id="recsys_incremental_update", task_id="validate", try_number=2, log_url=None),
    "dag_run": SimpleNamespace(logical_date=pendulum.datetime(2010, 12, 2, tz="UTC"), run_id="scheduled__2010-12-02"),
    "params": {}, "run_id": "scheduled__2010-12-02", "exception": ValueError("price out of range"),
}


@pytest.fixture
def clean_env(monkeypatch):
    """No RECSYS_NOTIFY_* or recsys connection from the caller's environment."""
    import os

    for name in list(os.environ):
        if name.startswith(("RECSYS_NOTIFY_", "AIRFLOW_CONN_RECSYS_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def smtp_login_server():
    """A real SMTP server on loopback that requires AUTH; yields (port, logins tried, messages received)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[str, str]] = []
    received: list[str] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == PASSWORD)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content.decode(errors="replace"))
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        yield port, logins, received
    finally:
        controller.stop()


@pytest.fixture
def webhook_server():
    """A real HTTP server on loopback; yields (base url, paths POSTed to)."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            paths.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def _no_secret_logged(caplog, *secrets: str) -> None:
    assert caplog.records
    leaked = [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in secrets)]
    assert leaked == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_the_smtp_login_comes_from_the_recsys_smtp_connection(clean_env, smtp_login_server, caplog):
    port, logins, received = smtp_login_server
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "login": "alerts", "password": PASSWORD,
            "extra": {"from_email": "recsys@shop.example"}}
    clean_env.setenv("AIRFLOW_CONN_RECSYS_SMTP", json.dumps(conn))
    clean_env.setenv("RECSYS_NOTIFY_BACKEND", "smtp")
    clean_env.setenv("RECSYS_NOTIFY_SMTP_HOST", "relay.invalid")  # the connection wins inside Airflow
    clean_env.setenv("RECSYS_NOTIFY_SMTP_TO", "oncall@shop.example")
    caplog.set_level(logging.INFO)
    RecsysFailureNotifier(partitioned=True).notify(CONTEXT)
    assert logins == [("alerts", PASSWORD)]
    assert len(received) == 1 and "From: recsys@shop.example" in received[0]
    assert "recsys_incremental_update.validate for 2010-12-02 failed" in received[0]
    _no_secret_logged(caplog, PASSWORD)
    # outside Airflow (the CLI) the same settings have no password: only RECSYS_NOTIFY_* count
    assert Settings.from_env().notify_smtp_password is None


def test_the_webhook_url_comes_from_the_recsys_webhook_connection(clean_env, webhook_server, caplog):
    url, paths = webhook_server
    clean_env.setenv("AIRFLOW_CONN_RECSYS_WEBHOOK",
                     json.dumps({"conn_type": "http", "password": f"{url}/services/{TOKEN}"}))
    clean_env.setenv("RECSYS_NOTIFY_BACKEND", "webhook")
    clean_env.setenv("RECSYS_NOTIFY_WEBHOOK_URL", f"{url}/from-the-environment")
    caplog.set_level(logging.INFO)
    RecsysFailureNotifier(partitioned=True).notify(CONTEXT)
    assert paths == [f"/services/{TOKEN}"]
    _no_secret_logged(caplog, TOKEN)
    # a task's settings carry it and register it with Airflow's secrets masker
    assert runtime.settings().notify_webhook_url == f"{url}/services/{TOKEN}"
    assert TOKEN not in str(redact(f"posting to {url}/services/{TOKEN}"))


def test_without_a_connection_the_recsys_notify_settings_are_used(clean_env, webhook_server):
    url, paths = webhook_server
    clean_env.setenv("RECSYS_NOTIFY_BACKEND", "webhook")
    clean_env.setenv("RECSYS_NOTIFY_WEBHOOK_URL", f"{url}/from-the-environment")
    RecsysFailureNotifier().notify(CONTEXT)
    assert paths == ["/from-the-environment"]


def test_a_webhook_connection_may_name_its_address_in_its_fields():
    def conn(**fields):
        return SimpleNamespace(**({"password": None, "host": None, "port": None, "schema": None} | fields),
                               extra_dejson=fields.pop("extra", {}))

    assert runtime.webhook_url(conn(host="https://hooks.example.com/services/x")) == "https://hooks.example.com/services/x"
    assert runtime.webhook_url(conn(host="127.0.0.1", port=8080, schema="http", extra={"endpoint": "/alerts"})) == (
        "http://127.0.0.1:8080/alerts"
    )
    assert runtime.webhook_url(conn(host="hooks.example.com")) == "https://hooks.example.com"
    assert runtime.webhook_url(conn()) is None


def test_dag_files_and_the_ui_read_the_settings_without_the_alert_secrets(clean_env):
    # the URL lives in the connection, so RECSYS_NOTIFY_* alone is incomplete: parsing a DAG file must not fail
    clean_env.setenv("RECSYS_NOTIFY_BACKEND", "webhook")
    clean_env.setenv("RECSYS_NOTIFY_SMTP_USER", "alerts")  # its password is in recsys_smtp
    with pytest.raises(ConfigError):
        Settings.from_env()
    assert runtime.settings_without_alerts().notify_backend == "log"
