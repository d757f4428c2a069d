"""Readable tables (rich) of what the ops API answers; ``--json`` prints the answer instead."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

MAX_ERROR_CHARS = 80


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _since(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _age((datetime.now(UTC) - moment).total_seconds()) + " ago"


def _cut(text, limit: int = MAX_ERROR_CHARS) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def queues(console: Console, rows: list[dict]) -> None:
    table = Table(title="Queues (oldest-message age: CloudWatch only, on AWS)")
    for column in ("queue", "visible", "in flight", "delayed", "DLQ", "DLQ in flight"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for q in rows:
        dead = f"[bold red]{q['dlq_visible']}[/]" if q["dlq_visible"] else "0"
        table.add_row(q["name"], str(q["visible"]), str(q["in_flight"]), str(q["delayed"]), dead,
                      str(q["dlq_in_flight"]))
    console.print(table)


def dead_letter_depths(console: Console, rows: list[dict]) -> None:
    table = Table(title="Dead-letter queues")
    for column in ("queue", "DLQ", "dead letters", "in flight"):
        table.add_column(column)
    for q in rows:
        table.add_row(q["name"], q["dlq_name"], str(q["dlq_visible"]), str(q["dlq_in_flight"]))
    console.print(table)


def dead_letters(console: Console, answer: dict) -> None:
    table = Table(title=f"Dead letters of {answer['queue']} ({answer['dlq']})")
    for column in ("message id", "order", "event", "reason", "receives", "consumer",
                   "failed", "error"):
        table.add_column(column)
    for m in answer["dead_letters"]:
        table.add_row(m["message_id"], m["order_id"] or "-", m["event_type"] or "-",
                      m["reason"] or "-", str(m["receive_count"] or "-"), m["consumer"] or "-",
                      _since(m["failed_at"]), _cut(m["error"]))
    console.print(table)


def unreachable(console: Console, answers: list[dict], what: str) -> None:
    for answer in answers:
        if answer["error"]:
            console.print(f"[red]{answer['service']}[/]: {what} not available ({answer['error']})")


def outboxes(console: Console, answers: list[dict]) -> None:
    table = Table(title="Outboxes")
    for column in ("service", "queue", "pending", "oldest pending", "failed", "max attempts"):
        table.add_column(column)
    failed_rows = []
    for answer in answers:
        if answer["error"]:
            continue
        data = answer["data"]
        if not data["queues"]:
            table.add_row(answer["service"], "-", "0", "-", "0", "0")
        for q in data["queues"]:
            table.add_row(answer["service"], q["queue"], str(q["pending"]),
                          _age(q["oldest_pending_s"]),
                          f"[red]{q['failed']}[/]" if q["failed"] else "0", str(q["max_attempts"]))
        failed_rows += [(answer["service"], row) for row in data.get("failed", [])]
    console.print(table)
    if failed_rows:
        rows = Table(title="Failed outbox rows")
        for column in ("service", "id", "queue", "event", "attempts", "next try", "error"):
            rows.add_column(column)
        for service, row in failed_rows:
            rows.add_row(service, str(row["id"]), row["queue"], row["event_type"],
                         str(row["attempts"]), row["next_attempt_at"], _cut(row["last_error"]))
        console.print(rows)
    unreachable(console, answers, "outbox")


def consumers(console: Console, answers: list[dict]) -> None:
    table = Table(title="Consumers")
    for column in ("consumer", "worker", "alive", "last message", "handled", "failed",
                   "dead-lettered"):
        table.add_column(column)
    for answer in answers:
        for c in [] if answer["error"] else answer["data"]["consumers"]:
            table.add_row(c["consumer"], c["worker"], "[green]yes[/]" if c["alive"] else "[red]no[/]",
                          _since(c["last_message_at"]), str(c["handled"]), str(c["failed"]),
                          str(c["dead_lettered"]))
    console.print(table)
    unreachable(console, answers, "consumers")


def breakers(console: Console, answers: list[dict]) -> None:
    table = Table(title="Circuit breakers")
    for column in ("service", "process", "breaker", "state", "failures"):
        table.add_column(column)
    for answer in answers:
        if answer["error"]:
            continue
        processes = [("api", answer["data"]["breakers"])] + [
            (w["worker"], w["breakers"]) for w in answer["data"].get("workers", [])]
        for process, states in processes:
            for name, b in states.items():
                state = b["state"] if b["state"] == "closed" else f"[bold red]{b['state']}[/]"
                table.add_row(answer["service"], process, name, state,
                              f"{b['failures']}/{b['fail_max']}")
    console.print(table)
    unreachable(console, answers, "breakers")


def blocked_groups(console: Console, answers: list[dict]) -> None:
    table = Table(title="Blocked FIFO groups (orders)")
    for column in ("service", "consumer", "order (group)", "kind", "blocked for", "event",
                   "receives", "last error"):
        table.add_column(column)
    for answer in answers:
        for g in [] if answer["error"] else answer["data"]["groups"]:
            table.add_row(answer["service"], g["consumer"], g["group_id"], g["kind"],
                          _age(g["blocked_for_s"]), g.get("event_type") or "-",
                          str(g.get("receive_count") or "-"), _cut(g.get("last_error")))
    console.print(table)
    unreachable(console, answers, "blocked groups")


def status(console: Console, answer: dict) -> None:
    if answer["queues_error"]:
        console.print(f"[red]queues[/]: not available ({answer['queues_error']})")
    else:
        queues(console, answer["queues"])
    outboxes(console, answer["outbox"])
    consumers(console, answer["consumers"])
    breakers(console, answer["breakers"])
    blocked_groups(console, answer["blocked_groups"])


def orders(console: Console, rows: list[dict]) -> None:
    table = Table(title="Orders")
    for column in ("id", "customer", "status", "payment", "total", "created"):
        table.add_column(column)
    for o in rows:
        payment = (o.get("payment") or {}).get("status", "-")
        table.add_row(o["id"], o["customer_id"], o["status"], payment,
                      f"{o['total']} {o['currency']}", _since(o["created_at"]))
    console.print(table)


def order(console: Console, o: dict) -> None:
    orders(console, [o])
    lines = Table(title="Lines")
    for column in ("sku", "quantity", "unit price", "total"):
        lines.add_column(column)
    for line in o.get("items", []):
        lines.add_row(line["sku"], str(line["quantity"]), str(line["unit_price"]),
                      str(line["line_total"]))
    console.print(lines)
    history = Table(title="History")
    for column in ("at", "status", "event", "applied"):
        history.add_column(column)
    for h in o.get("history", []):
        history.add_row(h.get("occurred_at", "-"), h.get("status", "-"), h.get("event", "-"),
                        str(h.get("applied", "-")))
    console.print(history)
