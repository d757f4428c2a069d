"""W3C Trace Context: one trace id from an HTTP request through every event it causes.

A request's ``traceparent`` header (https://www.w3.org/TR/trace-context/) is
accepted when valid, or a new trace is started; either way the request gets a
span of its own (same trace id, new span id) held in a context variable and
bound into the structlog context (``trace_id``, ``span_id``), so every log
line of the request carries it. Events created meanwhile carry the current
``traceparent`` in their envelope (:class:`shared.messaging.envelope.Envelope`
reads :func:`current_traceparent`), the outbox row and the SQS message with
them; a consumer continues the event's trace the same way while it handles it
(:func:`continued`), so its logs and the events it emits in turn share the
trace id.

Why not OpenTelemetry's propagator: the project exports no spans, it only
carries the id to logs and events; ``opentelemetry-api`` would bring a global
context and propagator registry for one header of four fixed-width hex fields.
:func:`parse` follows the specification's rules (version ``ff`` and all-zero
ids are invalid, version 00 has exactly four fields, a later version may add
fields after a dash, upper-case hex is invalid) and is tested against its
examples; whatever it refuses starts a new trace, as the specification says.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import structlog

TRACEPARENT_HEADER = "traceparent"
# version - trace-id - parent-id - trace-flags, then (only for versions > 00) more fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_INVALID_VERSION = "ff"
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
# Longer values are not worth parsing (a version-00 traceparent has 55 characters).
MAX_TRACEPARENT_CHARS = 512
# A trace we start is marked as recorded (flag 01): its id is in our logs.
SAMPLED = "01"

_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("trace_context",
                                                                              default=None)


@dataclass(frozen=True)
class TraceContext:
    """One span of a trace: the trace id, this span's id, the trace flags."""

    trace_id: str
    span_id: str
    flags: str = SAMPLED

    @classmethod
    def new(cls) -> TraceContext:
        """The first span of a new trace."""
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A span of the same trace whose parent is this one."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    @property
    def traceparent(self) -> str:
        """This span as a version-00 ``traceparent`` value."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass(frozen=True)
class Entered:
    """What :func:`end` needs to undo :func:`begin`."""

    token: contextvars.Token
    log_tokens: Mapping[str, contextvars.Token]


def parse(value: object) -> TraceContext | None:
    """The context a ``traceparent`` value names, or None when it is not a valid one."""
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == _INVALID_VERSION or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    # A later version's flags may mean more; only the sampled bit is ours to keep.
    return TraceContext(trace_id, span_id, flags if version == "00" else f"{int(flags, 16) & 1:02x}")


def current() -> TraceContext | None:
    """The span this code runs in (a request's or a consumed event's), if any."""
    return _current.get()


def current_traceparent() -> str | None:
    """The current span as a ``traceparent`` value, or None outside any trace."""
    context = _current.get()
    return context.traceparent if context is not None else None


def begin(incoming: object) -> tuple[TraceContext, Entered]:
    """Enter a span continuing ``incoming`` (a new trace when it is invalid or absent).

    Binds ``trace_id`` and ``span_id`` into the structlog context; :func:`end`
    restores what was there before.
    """
    parent = parse(incoming)
    context = parent.child() if parent is not None else TraceContext.new()
    token = _current.set(context)
    bound = structlog.contextvars.bind_contextvars(trace_id=context.trace_id, span_id=context.span_id)
    return context, Entered(token, bound)


def end(entered: Entered) -> None:
    """Leave the span :func:`begin` entered."""
    try:
        structlog.contextvars.reset_contextvars(**entered.log_tokens)
        _current.reset(entered.token)
    except ValueError:  # entered in another context (a streamed response ends elsewhere)
        structlog.contextvars.unbind_contextvars("trace_id", "span_id")
        _current.set(None)


@contextlib.contextmanager
def continued(incoming: object) -> Iterator[TraceContext]:
    """``with continued(envelope.traceparent):`` the span of handling one event."""
    context, entered = begin(incoming)
    try:
        yield context
    finally:
        end(entered)
