"""``RELIABILITY.md`` from a chaos run: what ran, what was done to it, what held."""

from __future__ import annotations

import os
import platform
from collections import Counter, defaultdict
from pathlib import Path

from devstack.chaos import faults as f
from devstack.chaos.flow import CANCELLED
from devstack.chaos.invariants import KNOWN_EDGES
from devstack.chaos.run import CANCEL_UNPAID, PAY_THEN_CANCEL, UNPAID, RunResult, summary

BEGIN = "<!-- chaos-run:begin -->"
END = "<!-- chaos-run:end -->"
HEADER = """# Reliability

What the platform promises — an accepted order is never lost and nothing
happens twice, whatever crashes — measured by a chaos run (`make chaos`,
`scripts/chaos.py`; docs/architecture.md, "The chaos run", says how it works).
The whole system runs as `make run` starts it while a seeded fault schedule
kills every kind of process, takes SQS and PostgreSQL away, freezes the
inventory API and the payment provider, duplicates and reorders deliveries and
puts the malformed corpus on every queue, while customers check out, pay,
cancel before and after paying, or leave orders unpaid to expire; then, once
it is quiet, invariants are checked against every service's schema. The
section below is rewritten by each run (`--report RELIABILITY.md`); reproduce
it with the seed and options it names.

"""


def render(result: RunResult) -> str:
    c = result.config
    placed = result.placed
    accepted = result.accepted
    cancels = [p for p in placed if p.cancel_status is not None]
    retried = sum(1 for p in placed if p.errors)
    confirms = [p for p in placed if p.order_id and p.plan not in (UNPAID, CANCEL_UNPAID)]
    paid = sum(1 for p in confirms if p.pay_status == 200)
    declined = sum(1 for p in confirms if p.pay_status == 402)
    lines = [BEGIN, "", f"## Latest run: {result.started_at}", ""]
    failed = [name for name, v in result.violations.items() if v]
    verdict = ("every invariant held" if not failed else
               f"{len(failed)} invariant(s) violated: " + "; ".join(failed))
    lines += [f"**{len(accepted)} orders accepted, {verdict}.**", ""]
    lines += ["| | |", "|---|---|",
              f"| command | `make chaos CHAOS_ARGS=\"--seed {c.seed} --duration {c.duration_s:.0f} "
              f"--orders {c.max_orders} --clients {c.clients} --sqs {c.sqs} --sqs-outage "
              f"{c.sqs_outage_s:.0f} --freeze {c.freeze_s:.0f} --provider-freeze "
              f"{c.provider_freeze_s:.0f} --cancel-ratio {c.cancel_ratio:g} --unpaid-ratio "
              f"{c.unpaid_ratio:g} --kills-per-process {c.kills_per_process}\"` |",
              f"| machine | {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
              f"Python {platform.python_version()}; shared with other work during the run |",
              f"| SQS emulator | {c.sqs} |",
              f"| traffic | {result.traffic_s:.0f} s, {c.clients} clients, {len(placed)} order requests, "
              f"{len(accepted)} answered 201, {retried} needed a retry |",
              f"| payments | {len(confirms)} confirmed by the customer: {paid} answered 200, "
              f"{declined} declined (402), {len(confirms) - paid - declined} other or no answer; "
              f"{sum(1 for p in placed if p.order_id and p.plan == UNPAID)} left unpaid to expire |",
              f"| cancellations | {len(cancels)} asked "
              f"({sum(1 for p in cancels if p.plan == CANCEL_UNPAID)} before paying, "
              f"{sum(1 for p in cancels if p.plan == PAY_THEN_CANCEL)} after): "
              f"{sum(1 for p in cancels if p.cancel_status == 200)} done, "
              f"{sum(1 for p in cancels if p.cancel_status == 409)} refused (already shipped) |",
              f"| quiescence | {result.quiescence_s:.0f} s after the traffic stopped |",
              f"| duplicated/reordered deliveries injected | {result.duplicates_sent} |",
              f"| malformed messages injected | {result.corpus_sent}, dead letters found: "
              f"{result.dead_letters} |", ""]
    by_kind: dict[str, list] = defaultdict(list)
    for fault in result.faults:
        by_kind[fault.fault.kind].append(fault)
    lines += ["### Faults", "", "| kind | count | recovery | notes |", "|---|---:|---|---|"]
    labels = {f.KILL: "SIGKILL of a process (restart after 0.2-3 s)",
              f.SQS_OUTAGE: f"SQS endpoint outage ({c.sqs_outage_s:.0f} s)",
              f.PG_RESTART: "PostgreSQL restart", f.FREEZE: f"inventory API freeze ({c.freeze_s:.0f} s)",
              f.PROVIDER_FREEZE: f"payment provider freeze (at least {c.provider_freeze_s:.0f} s; "
                                 "a checkout meanwhile must get 503)",
              f.DUPLICATE: "duplicate + reordered envelopes (bursts)",
              f.POISON: "malformed corpus on every queue"}
    for kind, label in labels.items():
        done = by_kind.get(kind, [])
        recoveries = [d.recovery_s for d in done if d.recovery_s is not None]
        errors = [d.error for d in done if d.error]
        note = "; ".join(errors) if errors else ""
        if kind == f.PROVIDER_FREEZE and not errors:
            note = "; ".join(d.detail for d in done if d.detail)
        if kind == f.KILL:
            note = ", ".join(f"{k} x{n}" for k, n in sorted(Counter(d.fault.target for d in done).items()))
        lines.append(f"| {label} | {len(done)} | {summary(recoveries)} | {note} |")
    lines += ["", "Recovery: for a kill, until the process is back (an API: `/health/ready` answers"
              " 200); for an outage, the freeze and the corpus, from its end until an order placed"
              " right after it has its shipment.", ""]
    lines += [f"### Schedule (seed {c.seed})", "", "```"]
    for fault in result.faults:
        extra = f"  -> {fault.detail}" if fault.detail else ""
        recovery = f"  recovered in {fault.recovery_s}s" if fault.recovery_s is not None else ""
        lines.append(f"{fault.fault.describe()}{extra}{recovery}" + (f"  ERROR {fault.error}"
                                                                      if fault.error else ""))
    lines += ["```", "", "### Invariants", "", "| invariant | result |", "|---|---|"]
    for name, violations in result.violations.items():
        verdict = "holds" if not violations else f"**{_count(violations)} violations**"
        lines.append(f"| {name} | {verdict} |")
    for name, violations in result.violations.items():
        if violations:
            lines += ["", f"**{name}**", ""] + [f"- {v}" for v in violations]
    if result.edges:
        lines += ["", "### Known edges observed", "", "Not violations: outcomes the design documents,"
                  " counted so that their frequency under faults is visible.", ""]
        for name, seen in result.edges.items():
            lines += [f"- **{name}**: {_count(seen)} — {KNOWN_EDGES[name][1]}."]
    if result.unexpected_exits:
        lines += ["", "Processes that exited on their own (restarted): " + ", ".join(
            f"{k} ({', '.join(v)})" for k, v in result.unexpected_exits.items())]
    for note in result.notes:
        lines += ["", note]
    statuses = Counter(p.status_code for p in placed)
    lines += ["", f"Answers to order requests: {dict(sorted((str(k), v) for k, v in statuses.items()))}; "
              f"cancelled orders are `{CANCELLED}`.", "", END, ""]
    return "\n".join(lines)


def _count(violations: list[str]) -> str:
    """The number of violations (the list is capped with an "... and N more" line)."""
    if violations and violations[-1].startswith("... and "):
        return str(len(violations) - 1 + int(violations[-1].split()[2]))
    return str(len(violations))


def write(result: RunResult, path: Path) -> None:
    """Replace the run section of ``path`` (create the file with its header if missing)."""
    text = path.read_text() if path.exists() else HEADER
    section = render(result)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
