"""moto's SQS server with a queue's message groups kept exclusive under concurrent receives.

moto 5.2.5 serves each request on its own thread and its ``ReceiveMessage``
scans a queue without a lock: it snapshots the groups in flight, then walks the
messages. Two receives on one FIFO queue at the same moment (the consumer's two
pollers) can each take part of one group — measured here: 27 of 40 rounds of
four simultaneous receives over ten groups split a group, e.g. ``h-1, h-2`` to
one poller and ``h-0`` to another, which are then handled out of order. AWS,
ElasticMQ and fauxqs never hand one group to two receivers at once.

This module runs ``moto.server`` with every call that reads or changes a
queue's in-flight state (receive, delete, visibility change, send) holding that
queue's own lock (the ``Condition`` moto's long poll waits on). A long poll
waits with the lock released and rescans when woken, so it does not block the
queue's other callers; queues do not block each other.

Run it as ``python -m devstack.moto_server`` with moto.server's arguments.
"""

from __future__ import annotations

import functools
import time

from moto.sqs.models import SQSBackend

# SQSBackend methods whose first argument is the queue name and that change the
# queue's messages or its set of in-flight (pending) messages; the batch calls
# go through these one entry at a time.
_STATE_CHANGES = ("delete_message", "change_message_visibility", "send_message")

# A long poll rescans at least this often: a visibility timeout running out
# wakes nobody. Deletes, visibility changes and sends wake it at once.
_RESCAN_S = 0.1


def _holding_the_queue_lock(method):
    """``method`` run under its queue's lock; waiting long polls are woken after it."""
    @functools.wraps(method)
    def locked(self, queue_name, *args, **kwargs):
        condition = self.get_queue(queue_name)._messages_lock
        # moto's Condition wraps an RLock, so its own add_message nests inside this.
        with condition:
            try:
                return method(self, queue_name, *args, **kwargs)
            finally:
                condition.notify_all()  # a delete may have freed a group a poll waits for
    return locked


def _receive_one_scan_at_a_time(receive):
    """``ReceiveMessage`` as single scans under the queue's lock, waiting outside it.

    moto's own long poll would spin while holding the lock whenever visible
    messages exist in groups that are in flight, starving the delete that frees them.
    """
    @functools.wraps(receive)
    def locked(self, queue_name, count, wait_seconds_timeout, *args, **kwargs):
        condition = self.get_queue(queue_name)._messages_lock
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        with condition:
            while True:
                received = receive(self, queue_name, count, 0, *args, **kwargs)
                remaining = deadline - time.monotonic()
                if received or remaining <= 0:
                    return received
                condition.wait(min(remaining, _RESCAN_S))  # releases the lock meanwhile
    return locked


def serialize_queue_state_changes() -> None:
    """Patch :class:`SQSBackend` so each queue's state changes one call at a time (call once)."""
    SQSBackend.receive_message = _receive_one_scan_at_a_time(SQSBackend.receive_message)
    for name in _STATE_CHANGES:
        setattr(SQSBackend, name, _holding_the_queue_lock(getattr(SQSBackend, name)))


def main() -> None:
    serialize_queue_state_changes()
    from moto.server import main as moto_main
    moto_main()


if __name__ == "__main__":
    main()
