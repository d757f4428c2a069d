"""Email: templates, providers (SMTP, AWS SES, console) and the dispatcher that sends them.

Mails are rows of ``email_deliveries`` written in the same transaction as the
notification; :class:`EmailDispatcher` sends them later, apart from the
stream and webhooks, so a slow or dead mail server never holds those up.
Each send goes through a breaker with a bounded retry for transient errors
(:func:`shared.resilience.resilient_call`); a mail that still fails is retried
later with backoff (``attempts``, ``next_attempt_at``, ``last_error``) and
finally marked ``failed``. Permanent refusals (a 5xx from SMTP, SES
``MessageRejected``) fail at once.

Leases: several dispatchers (threads and processes) share the table. A claim
leases a batch for ``NOTIFICATION_EMAIL_LEASE_S``; before each mail is sent its lease is taken
afresh, and kept renewed while the provider has the mail
(:class:`services.notification.email_leases.LeaseKeeper`), so a slow server
never lets another sender take over a mail still being sent. A
mail of the batch whose lease ran out while earlier ones were sent, and that
another sender took over, is skipped; an outcome is recorded only while the
lease is still the sender's. A sender that dies mid-send loses its lease when
it runs out and the mail is sent again (at least once, never twice by the living).
"""

from __future__ import annotations

import asyncio
import smtplib
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Protocol

import boto3
import jinja2
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

from services.notification import email_repository as repo
from services.notification.domain import retry_delay
from services.notification.email_leases import LeaseKeeper, lease_lost
from services.notification.settings import EmailSettings
from shared.logging import get_logger
from shared.notify import run_on_notify
from shared.resilience import BreakerOpen, BreakerRegistry, TransientError, resilient_call
from shared.settings import secret_value

log = get_logger(__name__)

EMAILS = Counter("emails_total", "Mail send outcomes (sent, retry, failed)", ["provider", "outcome"])

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates" / "email"
SUBJECTS = {
    "order_confirmation": "Your order {short_id} is confirmed",
    "order_shipped": "Your order {short_id} is on its way",
    "order_delivered": "Your order {short_id} was delivered",
    "order_cancelled": "Your order {short_id} was cancelled",
    "order_delivery_failed": "We could not deliver your order {short_id}",
}
CLAIM_BATCH = 10
SEND_ATTEMPTS = 3          # in-process tries per claim, for blips (then the backoff schedule)
SES_TIMEOUT_S = 10
# SES error codes that retrying cannot fix.
SES_PERMANENT = frozenset({"MessageRejected", "MailFromDomainNotVerifiedException",
                           "ConfigurationSetDoesNotExistException", "InvalidParameterValue",
                           "AccountSendingPausedException"})


class TransientSendError(TransientError):
    """The provider may accept the mail later (4xx, connection trouble, throttling)."""


class PermanentSendError(Exception):
    """The provider refused the mail for good (bad address, rejected content)."""


@dataclass(frozen=True)
class Mail:
    """A rendered mail."""

    to: str
    subject: str
    text: str
    html: str


class EmailProvider(Protocol):
    """Sends one rendered mail; returns the provider's message id (if any)."""

    name: str

    def send(self, mail: Mail) -> str | None: ...


# --- templates ---------------------------------------------------------------------------
class Renderer:
    """Jinja2 templates: ``<name>.html`` (autoescaped) and ``<name>.txt`` per mail."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR):
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir)),
            # Customer-supplied values (names, addresses) go into HTML: escape them all.
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=True),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    def render(self, template: str, to: str, context: Mapping[str, Any]) -> Mail:
        """Both parts and the subject of ``template`` for ``context``."""
        if template not in SUBJECTS:
            raise KeyError(f"unknown email template {template}")
        ctx = dict(context)
        ctx.setdefault("short_id", str(ctx.get("order_id", ""))[:8])
        subject = SUBJECTS[template].format(short_id=ctx["short_id"])
        return Mail(to=to, subject=subject,
                    text=self.env.get_template(f"{template}.txt").render(ctx),
                    html=self.env.get_template(f"{template}.html").render(ctx))


def mime_message(mail: Mail, sender: str) -> EmailMessage:
    """A multipart/alternative message (plain text first, HTML preferred)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Message-ID"] = make_msgid(domain="order-platform")
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


# --- providers -------------------------------------------------------------------------------
class ConsoleProvider:
    """Prints the mail (the ``make run`` default: no mail server needed)."""

    name = "console"

    def __init__(self, sender: str, stream=None):
        self.sender = sender
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, mail: Mail) -> str | None:
        message = mime_message(mail, self.sender)
        with self._lock:
            self.stream.write(f"----- email to {mail.to}: {mail.subject}\n{mail.text}\n-----\n")
            self.stream.flush()
        return message["Message-ID"]


class SmtpProvider:
    """smtplib with optional STARTTLS and login; one connection per mail."""

    name = "smtp"

    def __init__(self, settings: EmailSettings):
        self.settings = settings

    def send(self, mail: Mail) -> str | None:
        s = self.settings
        message = mime_message(mail, s.sender)
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
                smtp.ehlo()
                if s.smtp_starttls:
                    smtp.starttls()
                    smtp.ehlo()
                if s.smtp_username:
                    smtp.login(s.smtp_username, secret_value(s.smtp_password) or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(400 <= code < 500 for code in codes):
                raise TransientSendError(f"recipient deferred: {exc.recipients}") from None
            raise PermanentSendError(f"recipient refused: {exc.recipients}") from None
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are an operator problem that may be fixed: retry later.
            raise TransientSendError(f"SMTP authentication failed ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientSendError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
            raise PermanentSendError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
        except (smtplib.SMTPException, OSError) as exc:  # incl. timeouts
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from None
        if refused:
            raise PermanentSendError(f"recipient refused: {refused}")
        return message["Message-ID"]


class SesProvider:
    """AWS SES (``SendEmail``) via boto3."""

    name = "ses"

    def __init__(self, settings: EmailSettings, client=None):
        self.settings = settings
        self.client = client or boto3.client(
            "ses", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url,
            config=BotoConfig(connect_timeout=SES_TIMEOUT_S, read_timeout=SES_TIMEOUT_S,
                              retries={"max_attempts": 1, "mode": "standard"}))

    def send(self, mail: Mail) -> str | None:
        params: dict[str, Any] = {
            "Source": self.settings.sender,
            "Destination": {"ToAddresses": [mail.to]},
            "Message": {"Subject": {"Data": mail.subject, "Charset": "UTF-8"},
                        "Body": {"Text": {"Data": mail.text, "Charset": "UTF-8"},
                                 "Html": {"Data": mail.html, "Charset": "UTF-8"}}},
        }
        if self.settings.ses_configuration_set:
            params["ConfigurationSetName"] = self.settings.ses_configuration_set
        try:
            return self.client.send_email(**params)["MessageId"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in SES_PERMANENT:
                raise PermanentSendError(f"SES {code}: {exc}") from None
            raise TransientSendError(f"SES {code}: {exc}") from None
        except BotoCoreError as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from None


def build_provider(settings: EmailSettings) -> EmailProvider:
    """The provider ``NOTIFICATION_EMAIL_PROVIDER`` names."""
    if settings.provider == "smtp":
        return SmtpProvider(settings)
    if settings.provider == "ses":
        return SesProvider(settings)
    return ConsoleProvider(settings.sender)


# --- dispatcher ------------------------------------------------------------------------------
class EmailDispatcher:
    """Claims due mails, sends them through the provider's breaker, records the outcome."""

    def __init__(self, db, provider: EmailProvider, settings: EmailSettings,
                 breakers: BreakerRegistry, renderer: Renderer | None = None):
        self.db = db
        self.provider = provider
        self.settings = settings
        self.breaker = breakers.get(f"email-{provider.name}")
        self.renderer = renderer or Renderer()
        # A claimed mail's lease; renewed every third of it while it is sent, and taken over
        # by another sender only when it ran out (its sender died or lost the database that long).
        self.lease_s = settings.lease_s

    def dispatch_once(self) -> int:
        """Send every mail due now (in claim batches); return how many were handled."""
        token = uuid.uuid4()  # names this claim's leases
        with self.db.transaction() as cur:
            batch = repo.claim_emails(cur, CLAIM_BATCH, self.lease_s, token)
        for row in batch:
            self._send(row, token)
        return len(batch)

    def _send(self, row: dict, token: uuid.UUID) -> None:
        # The batch's lease has been ticking while earlier mails were sent: take this
        # mail's lease afresh, unless another sender took the mail over meanwhile.
        with self.db.transaction() as cur:
            if not repo.renew_email_lease(cur, row["id"], token, self.lease_s):
                log.info("email_taken_over", email_id=row["id"])
                return
        with LeaseKeeper(self.db, row["id"], token, self.lease_s):
            try:
                mail = self.renderer.render(row["template"], row["recipient"], row["context"])
                message_id = resilient_call(self.breaker, lambda: self.provider.send(mail),
                                            attempts=SEND_ATTEMPTS)
            except (PermanentSendError, KeyError, jinja2.TemplateError) as exc:
                outcome = ("failed", f"{type(exc).__name__}: {exc}")
            except BreakerOpen as exc:
                outcome = ("breaker_open", exc)
            except Exception as exc:  # transient (or unexpected): the backoff schedule retries it
                outcome = ("retry", f"{type(exc).__name__}: {exc}")
            else:
                outcome = ("sent", message_id)
        kind, detail = outcome
        if kind == "sent":
            with self.db.transaction() as cur:
                held = repo.mark_email_sent(cur, row["id"], token, self.provider.name, detail)
            if held:
                EMAILS.labels(self.provider.name, "sent").inc()
                log.info("email_sent", email_id=row["id"], template=row["template"],
                         order_id=row["order_id"], attempts=row["attempts"])
            else:
                lease_lost(row, "sent")
        elif kind == "breaker_open":
            # Not the mail's fault: try again when the breaker lets a call through.
            with self.db.transaction() as cur:
                if not repo.retry_email(cur, row["id"], token, max(1.0, detail.retry_after_s),
                                        str(detail)):
                    lease_lost(row, "breaker_open")
        elif kind == "failed":
            self._fail(row, token, detail)
        else:
            self._retry(row, token, detail)

    def _retry(self, row: dict, token: uuid.UUID, error: str) -> None:
        if row["attempts"] >= self.settings.max_attempts:
            self._fail(row, token, error)
            return
        delay = retry_delay(row["attempts"], self.settings.retry_base_s, self.settings.retry_cap_s)
        with self.db.transaction() as cur:
            if not repo.retry_email(cur, row["id"], token, delay, error):
                lease_lost(row, "retry")
                return
        EMAILS.labels(self.provider.name, "retry").inc()
        log.warning("email_retry", email_id=row["id"], attempts=row["attempts"],
                    retry_in_s=round(delay, 1), error=error[:200])

    def _fail(self, row: dict, token: uuid.UUID, error: str) -> None:
        with self.db.transaction() as cur:
            if not repo.fail_email(cur, row["id"], token, error):
                lease_lost(row, "failed")
                return
        EMAILS.labels(self.provider.name, "failed").inc()
        log.error("email_failed", email_id=row["id"], attempts=row["attempts"], error=error[:300])

    # -- running ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Send until ``stop`` is set; wake on NOTIFY, else poll."""
        # A batch sent: more may be due, claim again at once; none: wait for a NOTIFY.
        run_on_notify(self.db, repo.EMAIL_CHANNEL, lambda: 0 if self.dispatch_once() else None,
                      stop, poll_interval_s=self.settings.poll_interval_s,
                      on_error=self._on_error)

    @staticmethod
    def _on_error(exc: Exception) -> None:
        # The dispatcher must outlive database outages: log, reconnect after a poll.
        log.warning("email_dispatcher_error", error=str(exc))

    async def run_async(self, stop: asyncio.Event) -> None:
        """A worker task: ``settings.concurrency`` sender threads until ``stop``."""
        thread_stop = threading.Event()
        threads = [threading.Thread(target=self.run, args=(thread_stop,), daemon=True,
                                    name=f"email-{n}") for n in range(self.settings.concurrency)]
        for thread in threads:
            thread.start()
        log.info("email_dispatcher_started", provider=self.provider.name,
                 senders=len(threads))
        await stop.wait()
        thread_stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, self.settings.smtp_timeout_s + 5)

