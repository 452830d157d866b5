"""recsys.notify: the log, SMTP and webhook notifiers against real local servers, and the lateness check."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recsys import notify
from recsys.config import ConfigError, Settings
from recsys.notify import Alert, LogNotifier, NotifyError, SmtpNotifier, WebhookNotifier

ALERT = Alert("recsys_incremental_update.validate for 2010-12-02 failed", "Error: price range", "error",
              {"date": "2010-12-02", "run_id": "manual__1"})


# --- real local servers ------------------------------------------------------------------------------
@pytest.fixture
def smtp_server(unused_port):
    """A real SMTP server (aiosmtpd) on a free loopback port; yields (port, received messages)."""
    from aiosmtpd.controller import Controller

    received: list[dict] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                             "message": message_from_bytes(envelope.content, policy=policy.default)})
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=unused_port)
    controller.start()
    try:
        yield unused_port, received
    finally:
        controller.stop()


@pytest.fixture
def webhook_server():
    """A real HTTP server on a free loopback port; yields (base url, received bodies, status to answer)."""
    received: list[dict] = []
    status = {"code": 204}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received, status
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- notifiers ---------------------------------------------------------------------------------------
def test_log_notifier_logs_errors_at_error_and_lateness_at_warning(caplog):
    caplog.set_level(logging.INFO, logger="recsys.alerts")
    LogNotifier().send(ALERT)
    LogNotifier().send(Alert("partition 2010-12-04 is late", "no marker", "warning"))
    levels = [(r.levelno, r.getMessage().splitlines()[0]) for r in caplog.records]
    assert levels == [
        (logging.ERROR, f"ALERT {ALERT.subject}"), (logging.WARNING, "ALERT partition 2010-12-04 is late"),
    ]
    assert '"run_id": "manual__1"' in caplog.records[0].getMessage()


def test_smtp_notifier_delivers_a_mail_to_every_recipient(smtp_server):
    port, received = smtp_server
    settings = Settings(notify_backend="smtp", notify_smtp_host="127.0.0.1", notify_smtp_port=port,
                        notify_smtp_from="airflow@example.org", notify_smtp_to="oncall@example.org, ml@example.org")
    notifier = notify.notifier_from_settings(settings)
    assert isinstance(notifier, SmtpNotifier)
    notify.deliver(ALERT, notifier)
    assert len(received) == 1
    mail = received[0]
    assert mail["from"] == "airflow@example.org" and mail["to"] == ["oncall@example.org", "ml@example.org"]
    assert mail["message"]["Subject"].strip() == f"[recsys error] {ALERT.subject}"
    text = mail["message"].get_content()
    assert "Error: price range" in text and '"run_id": "manual__1"' in text


def test_smtp_failure_is_logged_and_raised(caplog, unused_port):
    caplog.set_level(logging.INFO, logger="recsys.alerts")
    notifier = SmtpNotifier("127.0.0.1", unused_port, "a@b", ["c@d"], timeout=2)
    with pytest.raises(NotifyError, match=f"127.0.0.1:{unused_port}"):
        notify.deliver(ALERT, notifier)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"ALERT {ALERT.subject}")  # the alert is not lost
    assert "the smtp notifier failed" in messages[1]


def test_webhook_notifier_posts_the_alert_as_json(webhook_server):
    url, received, _ = webhook_server
    notifier = notify.notifier_from_settings(Settings(notify_backend="webhook", notify_webhook_url=f"{url}/hooks/a"))
    assert isinstance(notifier, WebhookNotifier)
    notify.deliver(ALERT, notifier)
    assert received == [{"path": "/hooks/a", "type": "application/json", "json": {
        "subject": ALERT.subject, "body": ALERT.body, "severity": "error", "details": ALERT.details,
        "source": "recsys"}}]


def test_webhook_error_status_is_a_delivery_failure(webhook_server, caplog):
    url, received, status = webhook_server
    status["code"] = 500
    with pytest.raises(NotifyError, match="answered HTTP 500"):
        notify.deliver(ALERT, WebhookNotifier(url, timeout=2))
    assert len(received) == 1
    assert any(r.getMessage().startswith("ALERT ") for r in caplog.records)


def test_a_failing_webhook_is_named_without_its_token(webhook_server, unused_port, caplog):
    url, _, status = webhook_server
    status["code"] = 403
    token = "T0KEN-8f3a9c"  # webhook URLs carry their secret in the path (or query)
    for target in (f"{url}/services/{token}?key={token}", f"http://127.0.0.1:{unused_port}/services/{token}"):
        with pytest.raises(NotifyError) as info:
            notify.deliver(ALERT, WebhookNotifier(target, timeout=2))
        assert token not in str(info.value) and "127.0.0.1" in str(info.value)
    assert caplog.records and not [r for r in caplog.records if token in r.getMessage()]


def test_default_notifier_is_the_log():
    assert isinstance(notify.notifier_from_settings(Settings.from_env({})), LogNotifier)


@pytest.mark.parametrize(("env", "message"), [
    ({"RECSYS_NOTIFY_BACKEND": "pager"}, "expected one of log, smtp, webhook"),
    ({"RECSYS_NOTIFY_BACKEND": "smtp"}, "needs RECSYS_NOTIFY_SMTP_HOST"),
    ({"RECSYS_NOTIFY_BACKEND": "smtp", "RECSYS_NOTIFY_SMTP_HOST": "mail"}, "needs RECSYS_NOTIFY_SMTP_TO"),
    ({"RECSYS_NOTIFY_BACKEND": "webhook"}, "needs RECSYS_NOTIFY_WEBHOOK_URL"),
    ({"RECSYS_NOTIFY_WEBHOOK_URL": "ftp://x"}, "expected an http"),
    ({"RECSYS_NOTIFY_SMTP_USER": "me"}, "RECSYS_NOTIFY_SMTP_PASSWORD"),
    ({"RECSYS_PARTITION_LATE_HOUR": "24"}, "UTC hour 0-23"),
    ({"RECSYS_PARTITION_LATE_HOUR": "six"}, "not a valid int"),
    ({"RECSYS_RETRAIN_WINDOW_DAYS": "0"}, "RECSYS_RETRAIN_WINDOW_DAYS must be positive"),
])
def test_bad_alert_settings_are_refused_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_lateness_can_be_switched_off():
    assert Settings.from_env({"RECSYS_PARTITION_LATE_HOUR": "none"}).partition_late_hour is None
    assert Settings.from_env({}).partition_late_hour == 6


# --- lateness ----------------------------------------------------------------------------------------
class Recording:
    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Alert] = []
        self.fail = fail

    def send(self, alert: Alert) -> None:
        if self.fail:
            raise NotifyError("relay down")
        self.sent.append(alert)


DAY = date(2010, 12, 4)


def test_deadline_is_the_late_hour_of_the_next_day():
    assert notify.late_deadline(DAY, 6) == datetime(2010, 12, 5, 6, tzinfo=UTC)


def test_a_missing_partition_is_reported_once_after_the_deadline(store):
    settings = Settings(partition_late_hour=6)
    rec = Recording()
    assert notify.check_late(store, settings, DAY, datetime(2010, 12, 5, 5, 59, tzinfo=UTC), rec) is None
    record = notify.check_late(store, settings, DAY, datetime(2010, 12, 5, 7, 30, tzinfo=UTC), rec, run_id="r1")
    assert record is not None and record["run_id"] == "r1" and record["deadline"] == "2010-12-05T06:00:00+00:00"
    assert [a.subject for a in rec.sent] == ["partition 2010-12-04 is late"]
    assert rec.sent[0].severity == "warning" and "1.5 h after its deadline" in rec.sent[0].body
    assert store.read_json("alerts/late/dt=2010-12-04.json") == record
    # the sensor pokes again: no second alert
    assert notify.check_late(store, settings, DAY, datetime(2010, 12, 5, 8, tzinfo=UTC), rec) is None
    assert len(rec.sent) == 1


def test_a_complete_partition_or_switched_off_lateness_sends_nothing(store):
    late = datetime(2010, 12, 6, tzinfo=UTC)
    rec = Recording()
    assert notify.check_late(store, Settings(partition_late_hour=None), DAY, late, rec) is None
    store.mark_success("raw/events/dt=2010-12-04")
    assert notify.check_late(store, Settings(), DAY, late, rec) is None
    assert rec.sent == [] and not store.exists("alerts/late/dt=2010-12-04.json")


def test_a_failed_lateness_alert_is_tried_again_at_the_next_check(store):
    late = datetime(2010, 12, 6, tzinfo=UTC)
    with pytest.raises(NotifyError):
        notify.check_late(store, Settings(), DAY, late, Recording(fail=True))
    assert not store.exists("alerts/late/dt=2010-12-04.json")
    rec = Recording()
    assert notify.check_late(store, Settings(), DAY, late, rec) is not None and len(rec.sent) == 1


def test_failure_alert_names_the_task_the_date_and_what_to_do():
    alert = notify.failure_alert("recsys_incremental_update", "validate", "scheduled__2010-12-02", "2010-12-02",
                                 "partition 2010-12-02 is invalid", try_number=2, log_url="http://af/log")
    assert alert.subject == "recsys_incremental_update.validate for 2010-12-02 failed"
    assert "try 2" in alert.body and "Log: http://af/log" in alert.body and "Operating the platform" in alert.body
    assert alert.details["error"] == "partition 2010-12-02 is invalid"
