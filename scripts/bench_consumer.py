"""Benchmark: the consumer runtime beside raw loops and other libraries, same work, one run.

Usage: ``make bench-consumer`` or ``python scripts/bench_consumer.py [--messages 15000]
[--groups 50] [--processes 1,2] [--variants ...] [--quick]`` (``--help`` lists every option).

What it does, all on 127.0.0.1 and within one run:

1. a fresh embedded PostgreSQL (or DATABASE_URL) with a ``bench_consumer`` schema
   (the messaging tables, inbox included, and a ``consumed`` table), fauxqs 1.9.2;
2. for every variant (``scripts/bench_consumer_worker.py`` says what each does)
   and every process count: a fresh FIFO queue with its DLQ, filled with
   ``--messages`` envelopes over ``--groups`` message groups (sent in group
   order, so each group's sequence numbers are its send order), then N consumer
   processes started at once, each with ``--pollers`` receive loops, until every
   message has its row (bounded by ``--timeout``);
3. throughput = rows per second between the 10th and the 90th percentile of
   completion (steady state, without start-up and tail), CPU ms per message of
   the consumer processes, Postgres and fauxqs over the same run; checks that
   every message has exactly one row and that each group's rows were written in
   send order;
4. prints a table per variant, the ratios the issue sets targets for, and PASS/FAIL.

Exit status: 0 when every target passed, 1 when one failed or a check did
(missing, duplicated or reordered rows), 2 when the stack could not start,
130 on Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
import psycopg2
from bench_consumer_worker import EVENT_TYPE, SCHEMA, kombu_connection

from devstack import bench
from devstack.bench import RssSampler, Stack, Verdicts, table
from devstack.bench_profile import Profiler, summarize

VARIANTS = ("raw", "ours", "raw-batch", "ours-batch", "sqs-workers", "kombu")
REFERENCES = {"sqs-workers": "sqs_workers", "kombu": "kombu.transport.SQS"}
LOGICAL_QUEUE = "bench-consumer.fifo"
FILL_THREADS = 5
SEND_BATCH = 10
POLL_EVERY_S = 0.1
TARGET_VS_RAW = 0.80          # ours >= 80 % of the raw per-message loop (2 processes)
TARGET_BATCH_VS_RAW = 0.80    # batch mode >= 80 % of the raw per-batch loop
LABEL_WORKERS = "consumer processes"
# kombu publishes one SendMessage per message in its own format: filling 15,000 takes
# minutes on this machine, so its runs use at most this many (its rate is what is compared).
KOMBU_MAX_MESSAGES = 3000


def say(text: str) -> None:
    print(f"[bench-consumer] {text}", flush=True)


@dataclass
class Result:
    """One variant at one process count."""

    variant: str
    processes: int
    messages: int
    rows: int = 0
    distinct: int = 0
    out_of_order: int = 0
    rate: float = 0.0
    wall_s: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    profile: str | None = None

    @property
    def ok(self) -> bool:
        return (self.skipped is None and self.rows == self.messages
                and self.distinct == self.messages and self.out_of_order == 0)


def envelope_body(run: str, group: int, seq: int) -> tuple[str, str]:
    from shared.messaging.envelope import Envelope

    event = Envelope(event_type=EVENT_TYPE, aggregate_id=f"g{group}", producer="bench",
                     data={"run": run, "group": f"g{group}", "seq": seq})
    return event.event_id, event.to_json()


def create_schema(database_url: str) -> None:
    from shared.messaging.schema import messaging_tables_ddl

    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            cur.execute(f"CREATE SCHEMA {SCHEMA}")
            cur.execute(f"SET search_path TO {SCHEMA}")
            for statement in messaging_tables_ddl(SCHEMA):
                cur.execute(statement)
            cur.execute("""CREATE TABLE consumed (
                id bigserial PRIMARY KEY, run text NOT NULL, event_id uuid NOT NULL,
                group_id text NOT NULL, seq integer NOT NULL)""")
            cur.execute("CREATE INDEX consumed_run ON consumed (run)")
    finally:
        conn.close()


def make_queue(sqs_url: str, prefix: str) -> tuple[str, str]:
    """A fresh FIFO queue + DLQ under ``prefix``; (physical name, URL)."""
    from shared.messaging.sqs import ensure_queues, physical_name, sync_client
    from shared.messaging.topology import QueueSpec, Topology

    spec = QueueSpec(name=LOGICAL_QUEUE, producer="bench", consumers=("bench",),
                     event_types=(EVENT_TYPE,))
    urls = ensure_queues(sync_client(sqs_url, bench.REGION), Topology((spec,)), prefix)
    return physical_name(prefix, LOGICAL_QUEUE), urls[LOGICAL_QUEUE]


def fill(sqs_url: str, queue_name: str, queue_url: str, run: str, messages: int, groups: int,
         kombu: bool) -> None:
    """Send ``messages`` over ``groups`` groups; each group from one thread, in order."""
    from shared.messaging.sqs import sync_client

    def send_groups(owned: list[int]) -> None:
        pending = [(g, seq) for seq in range(messages // groups + 1) for g in owned
                   if seq * groups + g < messages]
        if kombu:
            with kombu_connection(sqs_url, queue_name, queue_url) as conn:
                producer = conn.Producer(serializer="json")
                for g, seq in pending:
                    event_id, body = envelope_body(run, g, seq)
                    producer.publish(json.loads(body), routing_key=queue_name,
                                     MessageGroupId=f"g{g}", MessageDeduplicationId=event_id)
            return
        client = sync_client(sqs_url, bench.REGION)
        for start in range(0, len(pending), SEND_BATCH):
            entries = []
            for i, (g, seq) in enumerate(pending[start:start + SEND_BATCH]):
                event_id, body = envelope_body(run, g, seq)
                entries.append({"Id": str(i), "MessageBody": body, "MessageGroupId": f"g{g}",
                                "MessageDeduplicationId": event_id})
            response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(f"fill: {len(response['Failed'])} sends failed")

    owners = [[g for g in range(groups) if g % FILL_THREADS == t] for t in range(FILL_THREADS)]
    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(send_groups, owners))


def count_rows(conn, run: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {SCHEMA}.consumed WHERE run = %s", (run,))
        return cur.fetchone()[0]


def steady_rate(timeline: list[tuple[float, int]], total: int) -> float:
    """Rows/s between the moments 10 % and 90 % of ``total`` had their row."""
    def when(share: float) -> float | None:
        return next((t for t, n in timeline if n >= share * total), None)

    low, high = when(0.10), when(0.90)
    if low is None or high is None or high <= low:
        return 0.0
    return 0.8 * total / (high - low)


def run_one(stack: Stack, database_url: str, sqs_url: str, variant: str, processes: int,
            messages: int, groups: int, pollers: int, timeout_s: float, env: dict,
            profile_s: float = 0.0) -> Result:
    if variant == "kombu":
        messages = min(messages, KOMBU_MAX_MESSAGES)
    result = Result(variant, processes, messages)
    module = REFERENCES.get(variant)
    if module is not None:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 (any import failure is a reason to skip)
            result.skipped = f"{module} cannot be imported ({type(exc).__name__}: {exc})"
            return result
    run = f"{variant}-{processes}-{uuid.uuid4().hex[:6]}"
    prefix = f"{run}-"
    queue_name, queue_url = make_queue(sqs_url, prefix)
    say(f"{variant} x{processes}: filling {messages} messages over {groups} groups")
    fill(sqs_url, queue_name, queue_url, run, messages, groups, kombu=variant == "kombu")
    sampler = RssSampler(every_s=0.5)
    children = []
    for n in range(processes):
        children.append(stack.start(f"{run}-{n}", [
            sys.executable, str(Path(__file__).with_name("bench_consumer_worker.py")),
            "--variant", variant, "--endpoint", sqs_url, "--database-url", database_url,
            "--queue-name", LOGICAL_QUEUE, "--queue-url", queue_url, "--prefix", prefix,
            "--pollers", str(pollers)], env))
    for child in children:
        sampler.track(LABEL_WORKERS, child.proc.pid)
    profiler = Profiler(stack.run_dir / "profile" / run, say=say)
    sampler.track("postgres", stack.postmaster_pid(), children=True)
    fauxqs = next(c for c in stack.children if c.name == "fauxqs")
    sampler.track("fauxqs", fauxqs.proc.pid)
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    timeline: list[tuple[float, int]] = []
    cpu_at_first: dict[str, float] | None = None
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            done = count_rows(conn, run)
            now = time.monotonic()
            timeline.append((now, done))
            if done and cpu_at_first is None:
                cpu_at_first = sampler.cpu_by_label()  # start-up (imports) not counted
                first_at = now
                if profile_s > 0:  # from the first handled message: start-up is not the subject
                    profiler.start(f"{variant} x{processes}, first process",
                                   children[0].proc.pid, profile_s)
            if done >= messages:
                break
            if any(c.proc.poll() is not None for c in children):
                say(f"{variant}: a consumer process died; see {stack.run_dir / 'logs'}")
                break
            time.sleep(POLL_EVERY_S)
        cpu_end = sampler.cpu_by_label()
        result.rate = steady_rate(timeline, messages)
        result.wall_s = (timeline[-1][0] - first_at) if cpu_at_first else 0.0
        done_rows = timeline[-1][1] if timeline else 0
        if cpu_at_first and done_rows:
            result.cpu_ms = {k: 1000 * (cpu_end[k] - cpu_at_first.get(k, 0.0)) / done_rows
                             for k in cpu_end}
    finally:
        for name, raw in profiler.finish().items():
            result.profile = summarize(raw).render(f"py-spy, {name}")
        for child in children:
            stack.stop(child)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {SCHEMA}.consumed"
                    " WHERE run = %s", (run,))
        result.rows, result.distinct = cur.fetchone()
        cur.execute(f"""SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY group_id
                        ORDER BY id) AS prev FROM {SCHEMA}.consumed WHERE run = %s) o
                        WHERE prev IS NOT NULL AND seq <= prev""", (run,))
        result.out_of_order = cur.fetchone()[0]
    conn.close()
    say(f"{variant} x{processes}: {result.rate:,.0f} msgs/s, {result.rows} rows")
    return result


@click.command()
@click.option("--messages", default=15_000, show_default=True, type=click.IntRange(100, 1_000_000))
@click.option("--groups", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--processes", default="1,2", show_default=True,
              help="Comma-separated consumer process counts.")
@click.option("--pollers", default=2, show_default=True, type=click.IntRange(1, 20),
              help="Receive loops per process (every variant).")
@click.option("--variants", default=",".join(VARIANTS), show_default=True,
              help="Comma-separated subset of: " + ", ".join(VARIANTS))
@click.option("--timeout", "timeout_s", default=300.0, show_default=True,
              type=click.FloatRange(5, 3600), help="Longest wait for one variant's backlog.")
@click.option("--quick", is_flag=True, help="3,000 messages: a smoke run, figures indicative only.")
@click.option("--quiet-timeout", default=30.0, show_default=True, type=click.FloatRange(0, 600))
@click.option("--keep-data", is_flag=True)
@click.option("--profile", "profile_s", default=0.0, show_default=True,
              type=click.FloatRange(0, 120),
              help="py-spy sampling of the first consumer process of every run, in seconds.")
def main(messages, groups, processes, pollers, variants, timeout_s, quick, quiet_timeout,
         keep_data, profile_s):
    """The consumer runtime vs raw boto3 loops, sqs-workers and kombu, on fauxqs."""
    bench.install_sigterm_handler()
    if quick:
        messages = min(messages, 3000)
    counts = [int(p) for p in processes.split(",") if p.strip()]
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise click.BadParameter(f"unknown variants: {sorted(unknown)}")
    try:
        code = run(messages, groups, counts, pollers, chosen, timeout_s, quiet_timeout, keep_data,
                   profile_s)
    except (KeyboardInterrupt, bench.Interrupted):
        print("interrupted; everything stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


def run(messages: int, groups: int, counts: list[int], pollers: int, variants: list[str],
        timeout_s: float, quiet_timeout: float, keep_data: bool, profile_s: float = 0.0) -> int:
    results: list[Result] = []
    with Stack.create("consumer", keep_data=keep_data, say=say) as stack:
        try:
            database_url = stack.database()
            sqs_url = stack.start_fauxqs()
            create_schema(database_url)
        except (RuntimeError, TimeoutError, OSError, psycopg2.Error) as exc:
            say(f"could not start: {exc}")
            return 2
        env = bench.production_env(database_url, sqs_url, "")
        watcher = RssSampler()
        # Every consumer process a run starts, and fauxqs, are this script's children.
        watcher.track_this_benchmark(stack.postmaster_pid())
        watcher.start()
        if quiet_timeout > 0:
            bench.wait_for_quiet_machine(watcher, quiet_timeout, say)
        mark = watcher.mark()
        for variant in variants:
            for count in counts:
                results.append(run_one(stack, database_url, sqs_url, variant, count, messages,
                                       groups, pollers, timeout_s, env, profile_s))
        foreign = watcher.foreign_since(mark)
        watcher.stop()
        log_dir = stack.run_dir / "logs"
    return report(results, messages, groups, pollers, foreign, log_dir)


def report(results: list[Result], messages: int, groups: int, pollers: int,
           foreign: tuple[float, float], log_dir: Path) -> int:
    print(f"\nConsumer benchmark: {messages:,} messages over {groups} groups per run, one INSERT "
          f"each, fauxqs; {pollers} receive loops per process\n")
    rows = []
    for r in results:
        if r.skipped:
            rows.append((r.variant, r.processes, "skipped", "-", "-", "-", "-", "-", r.skipped))
            continue
        rows.append((r.variant, r.processes, r.rate, f"{r.rows}/{r.messages}",
                     r.rows - r.distinct, r.out_of_order,
                     r.cpu_ms.get(LABEL_WORKERS, float("nan")),
                     r.cpu_ms.get("postgres", float("nan")), f"fauxqs {r.cpu_ms.get('fauxqs', 0):.2f}"))
    for r in results:
        if r.profile:
            print(r.profile + "\n")
    print(table(("variant", "processes", "msgs/s (p10-p90)", "rows", "duplicates",
                 "out of order", "consumer CPU ms/msg", "postgres CPU ms/msg", "other"), rows))

    by = {(r.variant, r.processes): r for r in results if not r.skipped}
    verdicts = Verdicts()
    for count in sorted({r.processes for r in results}):
        ours, raw = by.get(("ours", count)), by.get(("raw", count))
        if ours and raw and raw.rate:
            ratio = ours.rate / raw.rate
            verdicts.check(f"ours vs raw per-message loop, {count} process(es)",
                           f"{ratio:.0%} ({ours.rate:,.0f} vs {raw.rate:,.0f})",
                           ratio >= TARGET_VS_RAW, f">= {TARGET_VS_RAW:.0%}")
        batch, raw_batch = by.get(("ours-batch", count)), by.get(("raw-batch", count))
        if batch and raw_batch and raw_batch.rate:
            ratio = batch.rate / raw_batch.rate
            verdicts.check(f"batch mode vs raw per-batch loop, {count} process(es)",
                           f"{ratio:.0%} ({batch.rate:,.0f} vs {raw_batch.rate:,.0f})",
                           ratio >= TARGET_BATCH_VS_RAW, f">= {TARGET_BATCH_VS_RAW:.0%}")
    top = max((r.processes for r in results), default=0)
    ours, workers = by.get(("ours", top)), by.get(("sqs-workers", top))
    if ours and workers and workers.rate:
        verdicts.check(f"ours vs sqs-workers, {top} processes",
                       f"{ours.rate / workers.rate:.2f}x ({ours.rate:,.0f} vs {workers.rate:,.0f})",
                       ours.rate > workers.rate, "> 1x")
    for r in results:
        if r.variant == "kombu" and not r.skipped and ours and r.processes == top and r.rate:
            print(f"\nours vs kombu's SQS transport (Celery's), {top} processes: "
                  f"{ours.rate / r.rate:.1f}x")
    print()
    print(verdicts.render())
    problems = [f"{r.variant} x{r.processes}: {r.rows}/{r.messages} rows, "
                f"{r.rows - r.distinct} duplicates, {r.out_of_order} out of order"
                for r in results if not r.skipped and not r.ok]
    for problem in problems:
        print(f"ERROR: {problem}")
    for r in results:
        if r.skipped:
            print(f"skipped {r.variant}: {r.skipped}")
    print(bench.foreign_load_note(*foreign)[0])
    print(f"logs: {log_dir}")
    # The raw loops and the references have no inbox: a duplicate there is their figure,
    # not a failure of the benchmark; ours must be exact.
    ours_problems = [p for p, r in zip(problems, [r for r in results if not r.skipped and not r.ok],
                                       strict=True) if r.variant.startswith("ours")]
    return 0 if verdicts.all_passed and not ours_problems else 1


if __name__ == "__main__":
    main()
