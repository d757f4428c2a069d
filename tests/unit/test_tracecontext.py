"""W3C traceparent parsing and its way through requests, envelopes and consumers (no I/O)."""

from __future__ import annotations

import json

import pytest
import structlog

from shared import tracecontext
from shared.messaging.envelope import Envelope
from shared.tracecontext import TraceContext, parse
from tests.support.logs import capture_logs

# The specification's own example (https://www.w3.org/TR/trace-context/#examples-of-http-traceparent-headers).
SPEC_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_valid_traceparent_parses_into_its_fields():
    assert parse(SPEC_EXAMPLE) == TraceContext(TRACE_ID, "00f067aa0ba902b7", "01")
    assert parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").flags == "00"
    # Optional whitespace around a header value (RFC 9110 OWS).
    assert parse(f" {SPEC_EXAMPLE}\t") is not None


@pytest.mark.parametrize("value", [
    None, 42, "", "garbage",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       # version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",       # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       # all-zero parent id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",       # upper-case hex
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",        # trace id too short
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has 4 fields
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",        # flags are 2 digits
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + "0" * 600,
])
def test_an_invalid_traceparent_is_refused(value):
    assert parse(value) is None


def test_a_later_version_is_read_for_its_known_fields_only():
    # The specification: parse a higher version as version 00, ignoring what follows.
    context = parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-more-fields")
    assert context == TraceContext(TRACE_ID, "00f067aa0ba902b7", "01")
    assert context.traceparent == SPEC_EXAMPLE


def test_a_span_continues_the_incoming_trace_with_an_id_of_its_own_and_is_logged():
    assert tracecontext.current() is None
    with capture_logs([structlog.contextvars.merge_contextvars]) as logs, \
            tracecontext.continued(SPEC_EXAMPLE) as span:
        structlog.get_logger().info("inside")
        assert tracecontext.current() == span
        assert tracecontext.current_traceparent() == span.traceparent
    assert span.trace_id == TRACE_ID and span.span_id != "00f067aa0ba902b7"
    assert parse(span.traceparent) == span
    assert logs[0]["trace_id"] == TRACE_ID and logs[0]["span_id"] == span.span_id
    # Left behind: nothing (the next request or message starts clean).
    assert tracecontext.current() is None
    assert "trace_id" not in structlog.contextvars.get_contextvars()


def test_an_invalid_or_missing_incoming_value_starts_a_new_trace():
    with tracecontext.continued("00-nope") as first, tracecontext.continued(None) as second:
        assert parse(first.traceparent) == first and parse(second.traceparent) == second
    assert first.trace_id != second.trace_id
    assert first.trace_id != TRACE_ID


def test_spans_nest_and_restore_the_outer_one():
    with tracecontext.continued(SPEC_EXAMPLE) as outer:
        with tracecontext.continued(None):
            pass
        assert tracecontext.current() == outer
        assert structlog.contextvars.get_contextvars()["span_id"] == outer.span_id


def test_an_envelope_takes_the_current_span_and_keeps_old_bodies_unchanged():
    plain = Envelope(event_type="order.created", aggregate_id="a", data={}, producer="order")
    assert plain.traceparent is None
    assert "traceparent" not in json.loads(plain.to_json())  # byte for byte what it always was
    with tracecontext.continued(SPEC_EXAMPLE) as span:
        traced = Envelope(event_type="order.created", aggregate_id="a", data={}, producer="order")
        onward = traced.caused("delivery.shipment_created", "a", {}, "delivery")
    assert traced.traceparent == span.traceparent == onward.traceparent
    assert Envelope.from_json(traced.to_json()) == traced


def test_an_envelope_without_or_with_a_bad_traceparent_is_still_valid():
    body = json.loads(Envelope(event_type="x.y", aggregate_id="a", data={}, producer="p").to_json())
    assert Envelope.from_json(json.dumps(body)).traceparent is None
    for bad in ("00-zz", 17, None, "ff-" + SPEC_EXAMPLE[3:]):
        assert Envelope.from_json(json.dumps({**body, "traceparent": bad})).traceparent is None
    assert Envelope.from_json(json.dumps({**body, "traceparent": SPEC_EXAMPLE})).traceparent == SPEC_EXAMPLE


def test_a_consumer_handles_an_event_in_its_trace_and_onward_events_carry_it():
    from concurrent.futures import ThreadPoolExecutor

    from shared.messaging.consumer import Consumer
    from tests.unit.test_messaging_library import ORDERS, FakeDb, message

    seen = []

    def handler(cur, envelope):
        structlog.get_logger().info("handling")
        seen.append(envelope.caused("shop.billed", envelope.aggregate_id, {}, "billing"))

    consumer = Consumer("billing:orders.fifo", ORDERS, FakeDb(), {"shop.ordered": handler},
                        sqs_client_factory=None, executor=ThreadPoolExecutor(max_workers=1),
                        middleware=[])
    with tracecontext.continued(SPEC_EXAMPLE):  # the producer's request
        incoming = Envelope(event_type="shop.ordered", aggregate_id="o-1", data={}, producer="shop")
    untraced = Envelope(event_type="shop.ordered", aggregate_id="o-2", data={}, producer="shop")
    with capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        consumer.processor.process(message(incoming))
        consumer.processor.process(message(untraced))
    consumer.executor.shutdown()
    handling = [entry for entry in logs if entry["event"] == "handling"]
    assert handling[0]["trace_id"] == TRACE_ID
    assert parse(seen[0].traceparent).trace_id == TRACE_ID
    # Its own span: neither the request's nor the incoming event's.
    assert seen[0].traceparent not in (SPEC_EXAMPLE, incoming.traceparent)
    # An event from before trace context starts a trace of its own in the consumer.
    assert handling[1]["trace_id"] not in (TRACE_ID, None)
    assert parse(seen[1].traceparent).trace_id == handling[1]["trace_id"]


def test_a_call_to_a_peer_carries_the_current_span_as_its_traceparent():
    import pybreaker

    from shared.resilience import ResilientHttp

    class Recorder:
        def __init__(self):
            self.headers = []

        def request(self, method, url, **kwargs):
            self.headers.append(kwargs.get("headers"))
            return type("Response", (), {"status_code": 200, "text": ""})()

    session = Recorder()
    http = ResilientHttp("http://peer", pybreaker.CircuitBreaker(), session=session)
    http.request("GET", "/x", headers={"X-Request-ID": "r-1"})
    with tracecontext.continued(SPEC_EXAMPLE) as span:
        http.request("GET", "/x", headers={"X-Request-ID": "r-1"})
    assert session.headers[0] == {"X-Request-ID": "r-1"}  # outside a trace: nothing added
    assert session.headers[1] == {"X-Request-ID": "r-1", "traceparent": span.traceparent}
