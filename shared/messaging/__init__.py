"""Messaging over SQS FIFO: envelope, topology, outbox + relay, consumer + inbox."""
