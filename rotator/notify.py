"""Alerts: what a pass should tell people, and the notifiers that tell them.

Events (derived from a pass report by the pure :func:`alerts_for`):
- ``rotation_failed``: a policy's pass failed (an action, a store, or the issuer);
- ``expiring``: a key a target holds expires within ``alert_before`` and no rotation succeeded in the pass;
- ``pickup_overdue``: consumers have not moved to the new key within ``max_wait``;
- ``reload_failed``: a reload target could not be started, the service says its rollout failed, or it ran past
  ``reload_timeout`` (the old key stays; the reload is started again);
- ``outside_window``: a due rotation had to start outside its change window (or inside a freeze), because
  waiting for the next opening would have left the key too little time before it expires;
- ``rotation_completed`` (only with ``on_success: true``): an old key was revoked after its replacement.

The same alert for the same policy is sent at most once per ``alert_every``; a policy that recovers can alert
again at once. A notifier that fails is logged and never breaks a rotation. In a long-running process the
dedup state is kept in memory; ``state_file`` keeps it across ``rotator once`` runs (CronJob, cron).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from urllib3 import exceptions as u3

from rotator import httpio
from rotator.config import AlertsConfig, SecretSource, SlackConfig, SnsConfig, WebhookConfig
from rotator.engine import PassReport
from rotator.model import SECRETS, CreateKey, Reload, Revoke
from rotator.observability import record_call, redact_text
from rotator.planner import OUTSIDE_WINDOW_NOTE, RELOAD_FAILED_NOTE

log = structlog.get_logger("rotator")

EventKind = Literal[
    "rotation_failed", "expiring", "pickup_overdue", "reload_failed", "outside_window", "rotation_completed"
]


@dataclass(frozen=True)
class Alert:
    kind: EventKind
    policy: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _value(v: str | SecretSource) -> str:
    """A notifier setting: a literal, or read from {env: VAR} / {file: path} when it is sent. Every value is
    pinned in the redaction registry for the life of the process: a webhook URL (Slack's *is* the credential)
    and a header token must never reach a log, whatever the error that quotes them."""
    if isinstance(v, str):
        value = v
    elif v.env:
        value = os.environ.get(v.env, "")
    elif v.file:
        value = Path(v.file).read_text().strip()
    else:
        raise ValueError("notifier settings come from a literal, {env: VAR} or {file: path}")
    SECRETS.pin(value)
    SECRETS.pin_url(value)
    return value


#: seconds one pass's alerts may take to send, all notifiers together
SEND_BUDGET = 60.0
#: a notifier's answer is read up to this many bytes (it is not used; a larger one is refused unread)
MAX_ANSWER = 64 * 1024
_HEADER_VALUE_OK = frozenset(chr(c) for c in range(0x20, 0x7F)) | {"\t"}


class NotifierError(Exception):
    """A notifier could not deliver an alert. The message never holds the URL, a header or the answer."""


def slack_escape(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` escaped as Slack's formatting rules say
    (https://api.slack.com/reference/surfaces/formatting#escaping), so a consumer's answer or an issuer's error
    cannot ping ``<!channel>`` or disguise a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- deciding ---------------------------------------------------------------------------------------------


def alerts_for(report: PassReport, cfg: AlertsConfig, now: datetime) -> list[Alert]:
    """The alerts a finished pass calls for (before dedup). Pure."""
    out: list[Alert] = []
    if report.error is not None:
        for p in report.policies:
            out.append(Alert("rotation_failed", p.policy, f"issuer unavailable: {report.error}", {}))
    for p in report.policies:
        if report.error is not None:
            break
        failures = [r.error for r in p.results if not r.ok and r.error and not isinstance(r.action, Reload)]
        reloads = [f"{r.action.id}: {r.error}" for r in p.results if isinstance(r.action, Reload) and not r.ok]
        if p.plan is not None:
            reloads += [n.removeprefix("! ") for n in p.plan.notes if n.startswith(RELOAD_FAILED_NOTE)]
        if reloads:
            out.append(Alert("reload_failed", p.policy, f"reload of {p.policy} failed: " + "; ".join(reloads), {}))
        if p.error:
            failures.insert(0, p.error)
        if failures:
            out.append(
                Alert(
                    "rotation_failed",
                    p.policy,
                    f"rotation of {p.policy} failed: " + "; ".join(failures),
                    {"errors": failures},
                )
            )
        rotated = any(isinstance(r.action, CreateKey) and r.ok for r in p.results)
        # a steady key is not due yet, and one waiting for its window will rotate in time (the planner waits
        # only then): however close alert_before puts it, rotation has not failed to happen
        steady = p.plan is not None and p.plan.phase in ("steady", "awaiting-window") and p.ok
        if not rotated and not steady:
            for target, key in p.held_keys().items():
                if key is None or key.expires_at is None:
                    continue
                left = key.expires_at - now
                if left <= cfg.alert_before:
                    when = "expired" if left.total_seconds() <= 0 else f"expires in {_human(left)}"
                    out.append(
                        Alert(
                            "expiring",
                            p.policy,
                            f"key {key.key_id} held by {target} {when} and no rotation has succeeded",
                            {"target": target, "key_id": key.key_id, "expires_at": key.expires_at.isoformat()},
                        )
                    )
        outside = [n for n in p.plan.notes if n.startswith(OUTSIDE_WINDOW_NOTE)] if p.plan is not None else []
        if outside:
            out.append(Alert("outside_window", p.policy, outside[0].removeprefix("! "), {}))
        if p.plan is not None and any(n.startswith("! pickup overdue") for n in p.plan.notes):
            note = next(n for n in p.plan.notes if n.startswith("! pickup overdue"))
            out.append(Alert("pickup_overdue", p.policy, note.removeprefix("! "), {}))
        if cfg.on_success:
            for r in p.results:
                if isinstance(r.action, Revoke) and r.ok and r.action.reason.endswith("replaced"):
                    out.append(
                        Alert(
                            "rotation_completed",
                            p.policy,
                            f"rotation of {p.policy} completed: old key {r.action.key_id} revoked",
                            {
                                "revoked_key_id": r.action.key_id,
                                "current_key_id": p.plan.current_key if p.plan else None,
                            },
                        )
                    )
    return out


def _human(td: timedelta) -> str:
    from rotator.config import format_duration

    return format_duration(timedelta(seconds=int(td.total_seconds())))


# ---- sending ----------------------------------------------------------------------------------------------


class Notifier(Protocol):
    name: str

    def send(self, alert: Alert, now: datetime) -> None: ...


def _payload(alert: Alert, now: datetime) -> dict[str, Any]:
    return {
        "source": "rotator",
        "event": alert.kind,
        "policy": alert.policy,
        "message": alert.message,
        "details": alert.details,
        "time": now.astimezone(UTC).isoformat(),
    }


class WebhookNotifier:
    """POSTs the alert as JSON: one bounded request (:func:`rotator.httpio.fetch`, ``timeout`` in total, the
    answer capped at :data:`MAX_ANSWER`), no redirects. Raises NotifierError."""

    def __init__(self, cfg: WebhookConfig) -> None:
        self.name = "webhook"
        self.cfg = cfg
        if isinstance(cfg.url, str):
            _value(cfg.url)  # pinned from the start, before any error could quote it
        self._pools: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _pool(self, url: str) -> Any:
        with self._lock:
            found = self._pools.get(url)
            if found is None:
                found = httpio.pool(url, timeout=self.cfg.timeout.total_seconds(), maxsize=2)
                self._pools[url] = found
            return found

    def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        op = f"notify-{self.name}"
        for name, value in headers.items():
            if not value or any(c not in _HEADER_VALUE_OK for c in value):
                raise NotifierError(
                    f"the {name} header's value is empty or holds a line break or a non-ASCII character "
                    "(check the env var or file it is read from)"
                )
        try:
            r = httpio.fetch(
                self._pool(url),
                "POST",
                url,
                body=redact_text(json.dumps(body, default=str)).encode(),
                headers={"Content-Type": "application/json", "User-Agent": "rotator", **headers},
                timeout=self.cfg.timeout.total_seconds(),
                max_body=MAX_ANSWER,
            )
        except httpio.BodyTooLarge:
            record_call(op, "post", "error")
            raise NotifierError(f"the {self.name} answered with more than {MAX_ANSWER} bytes") from None
        except (u3.HTTPError, OSError, ValueError) as exc:
            record_call(op, "post", "error")
            raise NotifierError(f"the {self.name} could not be reached ({type(exc).__name__})") from None
        record_call(op, "post", r.status_code)
        if not 200 <= r.status_code < 300:
            raise NotifierError(f"the {self.name} answered HTTP {r.status_code}")

    def send(self, alert: Alert, now: datetime) -> None:
        headers = {k: _value(v) for k, v in self.cfg.headers.items()}
        self._post(_value(self.cfg.url), _payload(alert, now), headers)


class SlackNotifier(WebhookNotifier):
    def __init__(self, cfg: SlackConfig) -> None:
        super().__init__(WebhookConfig(type="webhook", url=cfg.url, timeout=cfg.timeout))
        self.name = "slack"
        self.slack = cfg

    def send(self, alert: Alert, now: datetime) -> None:
        icon = {
            "rotation_failed": ":rotating_light:",
            "expiring": ":hourglass:",
            "pickup_overdue": ":warning:",
            "reload_failed": ":arrows_counterclockwise:",
            "outside_window": ":calendar:",
            "rotation_completed": ":white_check_mark:",
        }[alert.kind]
        text = slack_escape(redact_text(alert.message))
        self._post(_value(self.slack.url), {"text": f"{icon} rotator: {text}"}, {})


class SnsNotifier:
    """Publishes the alert to an SNS topic. Each HTTP attempt is bounded (:func:`rotator.botohttp.bound`: ``timeout``
    seconds in total, the answer capped at :data:`MAX_ANSWER`) and botocore's standard retries make at most
    :attr:`ATTEMPTS`, so one publish ends well within :data:`SEND_BUDGET`. Raises botocore's errors."""

    #: seconds one HTTP attempt to SNS may take in total
    TIMEOUT = 10.0
    #: HTTP attempts per publish, the first included (botocore's ``total_max_attempts``)
    ATTEMPTS = 3

    def __init__(self, cfg: SnsConfig, *, timeout: float = TIMEOUT) -> None:
        from rotator.stores.registry import require_extra

        require_extra("aws")
        import boto3
        from botocore.config import Config

        from rotator import botohttp

        self.name = "sns"
        self.cfg = cfg
        self._client = boto3.client(
            "sns",
            region_name=cfg.region,
            endpoint_url=cfg.endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": self.ATTEMPTS}, user_agent_extra="rotator"
            ),
        )
        self._send = botohttp.bound(self._client, timeout=timeout, max_body=MAX_ANSWER)

    def send(self, alert: Alert, now: datetime) -> None:
        body = redact_text(json.dumps(_payload(alert, now), default=str))
        self._client.publish(
            TopicArn=self.cfg.topic_arn, Subject=f"rotator: {alert.kind} {alert.policy}"[:100], Message=body
        )
        record_call("notify-sns", "publish", 200)


def open_notifier(cfg: WebhookConfig | SlackConfig | SnsConfig) -> Notifier:
    if isinstance(cfg, WebhookConfig):
        return WebhookNotifier(cfg)
    if isinstance(cfg, SlackConfig):
        return SlackNotifier(cfg)
    return SnsNotifier(cfg)


class AlertHub:
    """Sends each due alert to every notifier, once per ``alert_every`` per (policy, kind)."""

    def __init__(
        self, cfg: AlertsConfig, notifiers: list[Notifier] | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.cfg = cfg
        self.notifiers = notifiers if notifiers is not None else [open_notifier(n) for n in cfg.notifiers]
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._sent: dict[str, str] = self._load()
        self.delivered: list[Alert] = []

    def _load(self) -> dict[str, str]:
        if not self.cfg.state_file:
            return {}
        try:
            data = json.loads(Path(self.cfg.state_file).read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        if not self.cfg.state_file:
            return
        p = Path(self.cfg.state_file)
        tmp: str | None = None
        try:
            # a fresh name (O_EXCL, 0600) beside the file: a symlink planted at a fixed name is never written through
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self._sent))
            os.replace(tmp, p)
            tmp = None
        except OSError as exc:
            log.warning("could not save alert state", path=str(p), error=exc.strerror or type(exc).__name__)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def handle(self, report: PassReport) -> list[Alert]:
        """Send what the report calls for; return what was sent. Never raises."""
        now = self.clock()
        due = alerts_for(report, self.cfg, now)
        sent: list[Alert] = []
        with self._lock:
            # a policy that is fine again may alert at once next time it fails
            failing = {a.policy for a in due if a.kind == "rotation_failed"}
            for p in report.policies:
                # recovered only when every target holds a live key again, not merely because this pass had
                # nothing to do (e.g. it waited for a key a failing store never took)
                healthy = p.plan is not None and (
                    p.plan.phase in ("steady", "awaiting-window", "awaiting-pickup", "revoking")
                    or any(isinstance(r.action, CreateKey) and r.ok for r in p.results)
                )
                if p.policy not in failing and report.error is None and healthy:
                    self._sent.pop(f"{p.policy}/rotation_failed", None)
            for a in due:
                key = f"{a.policy}/{a.kind}" + (f"/{a.details.get('target')}" if a.kind == "expiring" else "")
                last = self._sent.get(key)
                if (
                    a.kind != "rotation_completed"
                    and last is not None
                    and now - datetime.fromisoformat(last) < self.cfg.alert_every
                ):
                    continue
                self._sent[key] = now.isoformat()
                sent.append(a)
            self._save()
        # each send is bounded by its notifier's timeout, and the whole batch by SEND_BUDGET: a notifier that
        # hangs or drips delays the alerts behind it, never a pass (the daemon sends them on its own thread)
        end = time.monotonic() + SEND_BUDGET
        for a in sent:
            for n in self.notifiers:
                if time.monotonic() >= end:
                    log.error("alert not sent: the alerts' deadline passed", notifier=n.name, alert=a.kind)
                    continue
                try:
                    n.send(a, now)
                    log.info("alert sent", notifier=n.name, alert=a.kind, alert_policy=a.policy)
                except Exception as exc:
                    log.error("notifier failed", notifier=n.name, alert=a.kind, error=redact_text(str(exc)))
        self.delivered.extend(sent)
        return sent


__all__ = ["Alert", "AlertHub", "AlertsConfig", "alerts_for"]
