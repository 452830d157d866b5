"""Alerts: a small notifier interface with log, SMTP and webhook implementations, and lateness checks.

Which notifier is used is configuration (``RECSYS_NOTIFY_BACKEND``, see :mod:`recsys.config`):

- ``log`` (default): the alert is logged at ERROR (WARNING for lateness) by the ``recsys.alerts``
  logger, so it is in the Airflow task log and whatever collects it.
- ``smtp``: an e-mail through ``RECSYS_NOTIFY_SMTP_HOST``/``_PORT`` (optionally STARTTLS and a login)
  from ``RECSYS_NOTIFY_SMTP_FROM`` to the comma-separated ``RECSYS_NOTIFY_SMTP_TO``.
- ``webhook``: a JSON ``POST`` of :meth:`Alert.as_dict` to ``RECSYS_NOTIFY_WEBHOOK_URL`` (chat tools and
  incident managers accept such a body through their incoming-webhook adapters); any non-2xx answer is
  a delivery failure.

:func:`deliver` never loses an alert: when SMTP or the webhook fails, the alert is logged together
with the delivery error and :class:`NotifyError` is raised. The Airflow side (failure callbacks,
the partition sensor) lives in ``dags/``; this module does not import Airflow.

Lateness (:func:`check_late`): a partition is late when its ``_SUCCESS`` marker is still missing at
``RECSYS_PARTITION_LATE_HOUR`` (UTC) on the day after its date. The first check past that moment
sends one warning and writes ``alerts/late/dt=<date>.json`` to the store; later checks find that
record and stay quiet, so a sensor that keeps poking alerts once.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from email.message import EmailMessage
from typing import Any, Protocol

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.storage import PartitionStore, layout

log = logging.getLogger("recsys.alerts")

LATE_ALERTS = "alerts/late"
SEVERITIES = ("error", "warning", "info")


class NotifyError(RecsysError, RuntimeError):
    """An alert could not be delivered (it was logged instead)."""


@dataclass(frozen=True)
class Alert:
    """One alert: a one-line subject, a readable body, a severity and machine-readable details."""

    subject: str
    body: str
    severity: str = "error"  # error | warning | info
    details: dict[str, Any] = field(default_factory=dict)  # dag_id, task_id, run_id, date, log_url, ...

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r}: expected one of {', '.join(SEVERITIES)}")
        if not self.subject.strip():
            raise ValueError("an alert needs a subject")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"source": "recsys"}


class Notifier(Protocol):
    """Sends an alert somewhere; raises on failure (callers use :func:`deliver`)."""

    name: str

    def send(self, alert: Alert) -> None: ...


class LogNotifier:
    """Logs the alert (ERROR for errors, WARNING for warnings, INFO otherwise) to ``recsys.alerts``."""

    name = "log"

    def send(self, alert: Alert) -> None:
        level = {"error": logging.ERROR, "warning": logging.WARNING}.get(alert.severity, logging.INFO)
        log.log(level, "ALERT %s\n%s\n%s", alert.subject, alert.body, json.dumps(alert.details, default=str))


class SmtpNotifier:
    """Sends the alert as a plain-text e-mail (the details as JSON at the end of the body)."""

    name = "smtp"

    def __init__(
        self, host: str, port: int, sender: str, recipients: list[str], *, starttls: bool = False,
        user: str | None = None, password: str | None = None, timeout: float = 10.0,
    ) -> None:
        if not recipients:
            raise ValueError("an SMTP notifier needs at least one recipient")
        self.host, self.port, self.sender, self.recipients = host, port, sender, recipients
        self.starttls, self.user, self.password, self.timeout = starttls, user, password, timeout

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[recsys {alert.severity}] {alert.subject}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content(f"{alert.body}\n\n-- details --\n{json.dumps(alert.details, indent=2, default=str)}\n")
        return msg

    def send(self, alert: Alert) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.user is not None:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(self.message(alert))
        except (OSError, smtplib.SMTPException) as err:
            raise NotifyError(f"cannot send the alert by e-mail through {self.host}:{self.port}: {err}") from err


class WebhookNotifier:
    """POSTs :meth:`Alert.as_dict` as JSON to a URL; a non-2xx answer is a failure."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url, timeout
        # errors name the endpoint without its path and query: a webhook URL carries its token there
        parts = urllib.parse.urlsplit(url)
        self.endpoint = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."

    def send(self, alert: Alert) -> None:
        data = json.dumps(alert.as_dict(), default=str).encode()
        request = urllib.request.Request(
            self.url, data=data, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "recsys-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            raise NotifyError(f"the alert webhook {self.endpoint} answered HTTP {err.code}") from err
        except (OSError, ValueError) as err:
            raise NotifyError(f"cannot reach the alert webhook {self.endpoint}: {err}") from err
        if not 200 <= status < 300:
            raise NotifyError(f"the alert webhook {self.endpoint} answered HTTP {status}")


def notifier_from_settings(settings: Settings) -> Notifier:
    """The notifier ``RECSYS_NOTIFY_BACKEND`` names, configured from the other ``RECSYS_NOTIFY_*`` settings."""
    if settings.notify_backend == "smtp":
        return SmtpNotifier(
            settings.notify_smtp_host or "", settings.notify_smtp_port, settings.notify_smtp_from,
            [a.strip() for a in (settings.notify_smtp_to or "").split(",") if a.strip()],
            starttls=settings.notify_smtp_starttls, user=settings.notify_smtp_user,
            password=settings.notify_smtp_password, timeout=settings.notify_timeout_seconds,
        )
    if settings.notify_backend == "webhook":
        return WebhookNotifier(settings.notify_webhook_url or "", settings.notify_timeout_seconds)
    return LogNotifier()


def deliver(alert: Alert, notifier: Notifier) -> None:
    """Send ``alert``; if that fails, log it with the reason and raise :class:`NotifyError`."""
    try:
        notifier.send(alert)
    except NotifyError as err:
        LogNotifier().send(alert)
        log.error("the %s notifier failed, the alert above was only logged: %s", notifier.name, err)
        raise
    if notifier.name != "log":
        log.info("alert sent by %s: %s", notifier.name, alert.subject)


def failure_alert(
    dag_id: str, task_id: str, run_id: str, partition: str | None, error: str, try_number: int | None = None,
    log_url: str | None = None,
) -> Alert:
    """The alert for a task that failed for good (retries used up, or a domain error that never retries)."""
    what = f"{dag_id}.{task_id}" + (f" for {partition}" if partition else "")
    body = [f"Task {task_id} of DAG {dag_id} failed (run {run_id}" + (f", try {try_number}" if try_number else "")
            + ").", f"Error: {error}"]
    if log_url:
        body.append(f"Log: {log_url}")
    body.append("What to do: read the error and the task log; the README's 'Operating the platform' section says "
                "how to rerun the date, accept a partition or roll back.")
    return Alert(
        subject=f"{what} failed", body="\n".join(body), severity="error",
        details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "date": partition, "error": error,
                 "try_number": try_number, "log_url": log_url},
    )


def late_deadline(day: date, late_hour: int) -> datetime:
    """When partition ``day`` counts as late: ``late_hour``:00 UTC on the day after ``day``."""
    return datetime.combine(layout.shift_day(day, 1), time(hour=late_hour), tzinfo=UTC)  # 9999-12-31: no overflow


def late_record_path(day: date) -> str:
    return f"{LATE_ALERTS}/dt={day.isoformat()}.json"


def check_late(
    store: PartitionStore, settings: Settings, day: date, now: datetime, notifier: Notifier,
    run_id: str | None = None,
) -> dict[str, Any] | None:
    """Alert once if partition ``day`` is missing past its deadline; returns the alert record, else None.

    Nothing happens when lateness is switched off (``partition_late_hour`` None), before the deadline,
    when the partition is complete, or when the alert was already sent (the record exists). ``now``
    must be timezone-aware. A failed delivery writes no record (the next check tries again) and raises
    :class:`NotifyError`.
    """
    if now.tzinfo is None:
        raise ValueError("check_late needs a timezone-aware 'now'")
    if settings.partition_late_hour is None:
        return None
    deadline = late_deadline(day, settings.partition_late_hour)
    partition = layout.raw_events(day)
    if now < deadline or store.is_complete(partition) or store.exists(late_record_path(day)):
        return None
    hours = (now - deadline).total_seconds() / 3600
    alert = Alert(
        subject=f"partition {day} is late",
        body=(f"{store.uri(partition)} has no _SUCCESS marker at {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
              f"{hours:.1f} h after its deadline {deadline:%Y-%m-%d %H:%M} UTC "
              f"(RECSYS_PARTITION_LATE_HOUR={settings.partition_late_hour}). The sensor keeps waiting; "
              "later dates wait for this one. Ask the upstream owners, or see the README on dates without data."),
        severity="warning",
        details={"date": day.isoformat(), "partition": store.uri(partition), "deadline": deadline.isoformat(),
                 "run_id": run_id},
    )
    deliver(alert, notifier)
    record = {"date": day.isoformat(), "alerted_at": now.astimezone(UTC).isoformat(timespec="seconds"),
              "deadline": deadline.isoformat(), "notifier": notifier.name, "run_id": run_id}
    store.write_json(late_record_path(day), record)
    return record
