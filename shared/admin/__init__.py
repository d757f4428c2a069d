"""Each service's own admin data, served by each service (scope ``admin``).

A service's tables are read only by that service, so the operators' view of
its outbox, consumers and blocked FIFO groups is served by its own API under
``/v1/admin`` (:mod:`shared.admin.api`), built once here and mounted by every
service that handles messages. The ``ops`` service aggregates these over HTTP
and reads the queues themselves from SQS (docs/architecture.md, "Operating it").

* :mod:`shared.admin.schema` — DDL of the two small tables each service gets:
  ``consumer_heartbeats`` and ``blocked_groups``;
* :mod:`shared.admin.state` — the consumer middleware that fills them: one
  upsert when a message fails, one delete when a group that failed before
  succeeds (groups that never failed cost a set lookup), and a heartbeat task;
* :mod:`shared.admin.repository` — their SQL, and the outbox queries;
* :mod:`shared.admin.api` — the blueprint.
"""
