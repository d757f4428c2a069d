"""Messaging over SQS with a PostgreSQL outbox and inbox, independent of any one application.

Modules: ``envelope`` (the message format), ``topology`` (a :class:`Topology`
value the application builds and passes in), ``outbox`` (the table and its
SQL) + ``relay`` (publishing it), ``consumer`` + ``inbox`` (handling each event
once) with ``batch`` (message states, visibility, deletes), ``receiver``
(receives, isolating a bad one), ``supervision`` (restarting pollers) and
``deadletter`` (writing a dead letter), ``outcomes`` (typed results of handling), ``middleware`` (hooks for
metrics and logging), ``sqs`` (clients, queue creation), ``dlq`` (operator
tools), ``schema`` (the tables' DDL). Besides third-party packages it uses
only two application-agnostic helpers: :mod:`shared.backoff` and :mod:`shared.notify`.
"""
