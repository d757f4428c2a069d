"""The inbox: how a consumer handles each event once.

"Handled once" means: the effects of a handler's transaction are applied at
most once per ``(consumer, event_id)``, however often SQS delivers the
message. The consumer calls :func:`claim` inside the SAME transaction as the
handler; the inbox's primary key ``(consumer, event_id)`` then decides:

* the first delivery inserts the row, the handler runs, and both commit
  together — or both roll back (a failed handler leaves no inbox row, so the
  redelivery runs the handler again);
* a later delivery (redelivery after a lost delete, a replay from the DLQ,
  a duplicate send) finds the row, ``claim`` returns False and the handler is
  not run; the message is acknowledged as a duplicate.

Two concurrent deliveries of one event serialize on the primary key: the
second INSERT waits for the first transaction and then sees its row (or, if
the first rolled back, inserts its own). Effects outside the database (mail,
HTTP) are not covered; handlers make those idempotent themselves.

The table is created by :func:`shared.messaging.schema.messaging_tables_ddl`;
rows older than the retention period are purged by
:mod:`shared.messaging.retention` (:func:`purge_older_than`).
"""

from __future__ import annotations

from shared.messaging.envelope import Envelope


def claim(cur, consumer: str, event: Envelope, savepoint: str | None = None) -> bool:
    """Record ``event`` as handled by ``consumer`` in ``cur``'s transaction.

    True: first time, run the handler in this transaction. False: handled before.
    ``savepoint``: establish that savepoint first, in the same round trip (the
    consumer's batch mode opens one per message, just before its claim).
    """
    cur.execute(
        (f"SAVEPOINT {savepoint}; " if savepoint else "")
        + "INSERT INTO inbox (consumer, event_id, event_type) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (consumer, event.event_id, event.event_type))
    return cur.rowcount == 1


def purge_older_than(cur, days: int, limit: int) -> int:
    """Delete up to ``limit`` inbox rows received more than ``days`` ago; return how many went.

    A purged row no longer stops a redelivery of its event: ``days`` must
    exceed every redelivery window (:mod:`shared.messaging.retention`).
    """
    cur.execute(
        "DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM inbox"
        " WHERE received_at < now() - make_interval(days => %s) LIMIT %s FOR UPDATE SKIP LOCKED)",
        (days, limit))
    return cur.rowcount
