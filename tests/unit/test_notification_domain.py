"""Notification rules without I/O: topics, retry schedule, signatures, SSE framing,
SSRF policy, email templates and settings."""

from __future__ import annotations

import random

import pytest
from cryptography.fernet import Fernet

from services.notification.consumers import email_context
from services.notification.domain import (
    TOPICS,
    email_template_for,
    nominal_delay,
    retry_delay,
    schedule_span,
    sign,
    sse_event,
    subscribed_topics,
    topic_matches,
    verify,
    webhook_topic,
)
from services.notification.mailer import Mail, PermanentSendError, Renderer, SesProvider, TransientSendError
from services.notification.secretbox import SecretBox, SecretUnreadable
from services.notification.settings import (
    DEV_SECRET_KEY,
    EmailSettings,
    WebhookSettings,
    notification_settings,
)
from services.notification.ssrf import UnsafeUrl, UrlPolicy
from shared.config import ConfigError, load_settings

DB = {"DATABASE_URL": "postgresql://u:p@localhost/db"}


# --- topics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("event_type, data, topic", [
    ("order.created", {}, "order.created"),
    ("order.cancelled", {}, "order.cancelled"),
    ("order.status_changed", {"status": "SHIPPED"}, "order.updated"),
    ("order.status_changed", {"status": "CANCELLED"}, "order.updated"),
    ("order.status_changed", {"status": "DELIVERED"}, "order.delivered"),
])
def test_webhook_topic(event_type, data, topic):
    assert webhook_topic(event_type, data) == topic


def test_topic_matching():
    assert subscribed_topics("order.delivered") == ["order.updated", "order.delivered", "*"]
    assert subscribed_topics("order.created") == ["order.created", "*"]
    assert not topic_matches("order.delivered", "order.updated")
    assert all(topic_matches("*", t) for t in TOPICS)
    with pytest.raises(ValueError):
        webhook_topic("delivery.shipped", {})


@pytest.mark.parametrize("event_type, status, template", [
    ("order.created", None, "order_confirmation"),
    ("order.cancelled", None, "order_cancelled"),
    ("order.status_changed", "SHIPPED", "order_shipped"),
    ("order.status_changed", "DELIVERED", "order_delivered"),
    ("order.status_changed", "DELIVERY_FAILED", "order_delivery_failed"),
    ("order.status_changed", "CANCELLED", None),  # order.cancelled already mails
])
def test_email_template_for(event_type, status, template):
    assert email_template_for(event_type, {"status": status}) == template


# --- retry schedule -------------------------------------------------------------------------------
def test_default_schedule_has_at_least_8_attempts_over_at_least_an_hour():
    cfg = WebhookSettings()
    assert cfg.max_attempts >= 8
    worst = schedule_span(cfg.max_attempts, cfg.retry_base_s, cfg.retry_cap_s, jitter=0.8)
    assert worst >= 3600, worst
    eight = schedule_span(8, cfg.retry_base_s, cfg.retry_cap_s, jitter=0.8)
    assert eight >= 3000  # 8 attempts alone already span ~50 minutes at the shortest


def test_backoff_is_exponential_capped_and_jittered():
    assert [nominal_delay(n, 30, 4 * 3600) for n in range(1, 5)] == [30, 60, 120, 240]
    assert nominal_delay(40, 30, 4 * 3600) == 4 * 3600
    rng = random.Random(7)
    delays = [retry_delay(3, 30, 4 * 3600, rng) for _ in range(200)]
    assert min(delays) >= 96 and max(delays) <= 144 and len(set(delays)) > 100


# --- signatures ------------------------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    body = b'{"id":"x"}'
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("secret", 1700000000, body) == "sha256=" + expected


def test_verify_rejects_stale_tampered_and_foreign():
    body = b'{"a":1}'
    now = 1_700_000_000
    good = sign("s3cret", now, body)
    assert verify("s3cret", str(now), good, body, now=now + 10)
    assert not verify("s3cret", str(now), good, body, now=now + 301)        # stale
    assert not verify("s3cret", str(now), good, b'{"a":2}', now=now)         # tampered
    assert not verify("other", str(now), good, body, now=now)                # foreign secret
    assert not verify("s3cret", str(now + 1), good, body, now=now)           # timestamp changed
    assert not verify("s3cret", "abc", good, body, now=now)
    assert not verify("s3cret", None, good, body, now=now)


def test_sse_framing():
    assert sse_event('{"a":1}', event="order.created", event_id="7") == (
        'id: 7\nevent: order.created\ndata: {"a":1}\n\n')
    assert sse_event("a\nb") == "data: a\ndata: b\n\n"


# --- SSRF ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://[::1]/", "http://10.0.0.1/", "http://172.16.5.4/",
    "http://192.168.0.1/", "http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/",
    "http://100.64.0.1/", "http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/",
    "gopher://93.184.216.34/", "file:///etc/passwd", "http://u:p@93.184.216.34/", "http:///nohost",
    "http://93.184.216.34/#frag", "http://93.184.216.34:99999/",
])
def test_ssrf_policy_refuses(url):
    with pytest.raises(UnsafeUrl):
        UrlPolicy().check_url(url)


def test_ssrf_allow_list_names_hosts_addresses_and_networks():
    policy = UrlPolicy(("localhost", "127.0.0.1", "10.8.0.0/16"))
    for url in ("http://localhost:8080/hook", "http://127.0.0.1:9/x", "https://10.8.3.4/x",
                "https://93.184.216.34/hook"):
        policy.check_url(url)
    with pytest.raises(UnsafeUrl):
        policy.check_url("http://10.9.0.1/")
    with pytest.raises(UnsafeUrl):
        policy.check_peer("evil.example", "10.9.0.1")  # a rebinding answer at connect time
    policy.check_peer("localhost", "127.0.0.1")


# --- email ----------------------------------------------------------------------------------------------
def test_templates_escape_customer_supplied_html():
    context = email_context("1234abcd-0000", None, {
        "shipping_address": {"name": '<script>alert("pwned")</script>', "line1": "<b>1</b> St",
                             "city": "Berlin", "postal_code": "1", "country": "DE"},
        "lines": [{"sku": "<img src=x>", "quantity": 1, "unit_price": "1.00", "line_total": "1.00"}],
        "total": "1.00", "currency": "EUR"})
    mail = Renderer().render("order_confirmation", "a@example.com", context)
    assert "<script>" not in mail.html and "<img" not in mail.html and "<b>1</b>" not in mail.html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in mail.html
    assert '<script>alert("pwned")</script>' in mail.text  # plain text is not HTML
    assert mail.subject == "Your order 1234abcd is confirmed"


@pytest.mark.parametrize("template", ["order_confirmation", "order_shipped", "order_delivered",
                                      "order_cancelled", "order_delivery_failed"])
def test_every_template_renders_with_a_sparse_event(template):
    mail = Renderer().render(template, "a@example.com", email_context("o-1", None, {}))
    assert mail.text.strip() and mail.html.startswith("<!DOCTYPE html>")


class _FakeSes:
    def __init__(self, error_code):
        from botocore.exceptions import ClientError

        self.error = ClientError({"Error": {"Code": error_code, "Message": "x"}}, "SendEmail")

    def send_email(self, **_kwargs):
        raise self.error


def test_ses_errors_are_classified():
    mail = Mail("a@example.com", "s", "t", "<p>h</p>")
    with pytest.raises(PermanentSendError):
        SesProvider(EmailSettings(provider="ses"), _FakeSes("MessageRejected")).send(mail)
    with pytest.raises(TransientSendError):
        SesProvider(EmailSettings(provider="ses"), _FakeSes("Throttling")).send(mail)


# --- settings -------------------------------------------------------------------------------------------
def test_settings_defaults_and_validation():
    own = notification_settings(load_settings("notification", DB))
    assert (own.email.provider, own.stream.heartbeat_s, own.webhooks.timeout_s) == ("console", 15, 5)
    assert own.webhooks.disable_after == 10 and own.webhooks.allowed_hosts == ()
    production = {**DB, "APP_ENV": "production", "JWT_SECRET": "x" * 40}
    with pytest.raises(ConfigError, match="NOTIFICATION_SECRET_KEYS"):
        notification_settings(load_settings("notification", production))
    with pytest.raises(ConfigError, match="NOTIFICATION_SECRET_KEYS"):
        notification_settings(load_settings("notification", {
            **production, "NOTIFICATION_SECRET_KEYS": DEV_SECRET_KEY}))
    production["NOTIFICATION_SECRET_KEYS"] = Fernet.generate_key().decode()
    with pytest.raises(ConfigError, match="NOTIFICATION_EMAIL_PROVIDER"):
        notification_settings(load_settings("notification", production))
    with pytest.raises(ConfigError, match="NOTIFICATION_SECRET_KEYS"):
        notification_settings(load_settings("notification", {
            **DB, "NOTIFICATION_SECRET_KEYS": "not-a-key"}))


def test_secret_box_rotates_keys_and_reads_old_plaintext():
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = SecretBox((old_key,)).seal("whsec_abc")
    assert sealed.startswith("fernet:") and "whsec_abc" not in sealed
    rotated = SecretBox((new_key, old_key))
    assert rotated.open(sealed) == "whsec_abc"            # old secrets still open
    assert rotated.open("plain-from-before") == "plain-from-before"
    with pytest.raises(SecretUnreadable):
        SecretBox((new_key,)).open(sealed)                # the old key was dropped too early
    with pytest.raises(ConfigError, match="NOTIFICATION_WEBHOOK_ALLOWED_HOSTS"):
        notification_settings(load_settings("notification", {
            **DB, "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "10.0.0.0/99"}))
    with pytest.raises(ConfigError, match="NOTIFICATION_EMAIL_PROVIDER"):
        notification_settings(load_settings("notification", {
            **DB, "NOTIFICATION_EMAIL_PROVIDER": "pigeon"}))
