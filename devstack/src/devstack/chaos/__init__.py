"""The chaos run (``make chaos``, ``scripts/chaos.py``): the whole system under faults, then invariants.

* :mod:`.flow` — what a customer does (place an order, cancel it) and the order
  statuses, in one place (the terminal ones read from ``services.order.domain``);
* :mod:`.stack` — every API and worker as ``make run`` starts them, on an
  embedded PostgreSQL and an SQS emulator behind a TCP proxy, restarted when
  killed (as an orchestrator would);
* :mod:`.faults` — the seeded, printed fault schedule and each fault;
* :mod:`.invariants` — the checks, each a small function over the schemas
  (read directly: the black-box auditor's privilege);
* :mod:`.report` — ``RELIABILITY.md`` from a run;
* :mod:`.run` — the run itself.
"""
