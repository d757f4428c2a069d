"""``orderctl``: see what flows and fix what is stuck, over the ops API.

Against ``make run`` it needs no setting (orderctl.config). Every command
takes ``--json`` (print the API's answer instead of tables). Errors are one
line on stderr, never a traceback, and the exit code says what happened:

  0  done
  1  refused by the API (bad input, not found, confirmation mismatch)
  2  usage error (unknown option, missing argument)
  3  a service or the queue broker cannot be reached (or answered 502/503/504)
  4  no token could be had, or it was refused (401/403)
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from dataclasses import dataclass, field

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orderctl import render
from orderctl.client import OK, Api, CtlError, demo_token
from orderctl.config import IDENTITIES, Endpoints
from shared.auth import SCOPES
from shared.services import SERVICES

# A replay is sent in chunks of this many, so the progress bar moves and a chunk fails alone.
REPLAY_CHUNK = 50
# Every service with a worker has an outbox and serves its admin view.
OUTBOX_SERVICES = tuple(s.name for s in SERVICES if s.worker is not None)
SEED_ADDRESS = {"name": "Seed Customer", "line1": "1 Main St", "city": "Berlin",
                "postal_code": "10115", "country": "DE"}
# Stripe's test PaymentMethod the demo storefront confirms with: no card data involved.
TEST_PAYMENT_METHOD = "pm_card_visa"


@dataclass
class State:
    """What every command shares: the endpoints, output mode, and a lazily made client."""

    endpoints: Endpoints
    as_json: bool = False
    token: str | None = None
    console: Console = field(default_factory=Console)
    _apis: dict = field(default_factory=dict)

    def api(self, who: str = "operator") -> Api:
        """A client holding a token for ``who`` (ORDERCTL_TOKEN if set, else a demo identity)."""
        if who not in self._apis:
            token = self.token if who == "operator" and self.token else \
                demo_token(self.endpoints, who)["access_token"]
            self._apis[who] = Api(self.endpoints, token)
        return self._apis[who]

    def emit(self, answer, table) -> None:
        """``--json``: the answer as JSON on stdout; else ``table(console, answer)``."""
        if self.as_json:
            click.echo(json.dumps(answer, indent=2, default=str))
        else:
            table(self.console, answer)


def json_option(command):
    """``--json`` on a command (it may also be given before the command)."""
    def set_json(ctx: click.Context, _param, value: bool) -> None:
        if value:
            ctx.find_object(State).as_json = True

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                        help="Print the API's answer as JSON.")(command)


pass_state = click.make_pass_decorator(State)


class OrderCtl(click.Group):
    """Turns every :class:`CtlError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CtlError as exc:
            click.echo(f"orderctl: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=OrderCtl, epilog="Exit codes: 0 done, 1 refused by the API, 2 usage error, "
                                  "3 service or broker unreachable, 4 no token or refused.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answers as JSON.")
@click.pass_context
def cli(ctx: click.Context, as_json: bool) -> None:
    """See whether orders flow, and fix what is stuck (queues, dead letters, outboxes, groups)."""
    ctx.obj = State(Endpoints.from_env(), as_json=as_json,
                    token=os.environ.get("ORDERCTL_TOKEN") or None)


@cli.command()
@json_option
@pass_state
def status(state: State) -> None:
    """Queues, DLQs, outboxes, consumers, breakers and blocked groups on one screen."""
    state.emit(state.api().ops("GET", "/status"), render.status)


# -- dead letters ------------------------------------------------------------------------------
@cli.group()
def dlq() -> None:
    """Dead letters: list, peek, replay, purge."""


@dlq.command("list")
@json_option
@pass_state
def dlq_list(state: State) -> None:
    """Every DLQ and how many dead letters it holds."""
    answer = state.api().ops("GET", "/queues")["queues"]
    state.emit(answer, render.dead_letter_depths)


def _filters(function):
    for option in (
        click.option("--order-id", help="Only this order's dead letters."),
        click.option("--event-type", help="Only this event type, e.g. order.created."),
        click.option("--reason", help="Only this reason, e.g. max_receives_exceeded."),
    ):
        function = option(function)
    return function


@dlq.command()
@click.argument("queue")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100))
@_filters
@json_option
@pass_state
def peek(state: State, queue: str, limit: int, order_id, event_type, reason) -> None:
    """Show QUEUE's dead letters with reason, consumer, receives, event and order (they stay)."""
    params = {k: v for k, v in {"limit": limit, "order_id": order_id, "event_type": event_type,
                                "reason": reason}.items() if v is not None}
    state.emit(state.api().ops("GET", f"/dlq/{queue}", params=params), render.dead_letters)


@dlq.command()
@click.argument("queue")
@click.option("--all", "everything", is_flag=True, help="Every dead letter of QUEUE.")
@click.option("--message-id", "message_ids", multiple=True, help="Repeat for several.")
@_filters
@click.option("--limit", type=click.IntRange(1, 100_000), help="Move at most this many.")
@click.option("--move-task", is_flag=True,
              help="With --all: let SQS move them (StartMessageMoveTask) where the broker can.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def replay(state: State, queue: str, everything: bool, message_ids, order_id, event_type,
           reason, limit, move_task: bool, yes: bool) -> None:
    """Move QUEUE's dead letters back to it (all, or those matching), keeping each order's order.

    An event a consumer had handled already is absorbed by its inbox.
    """
    wanted = {k: v for k, v in {"message_ids": list(message_ids) or None, "order_id": order_id,
                                "event_type": event_type, "reason": reason}.items() if v}
    if everything == bool(wanted):
        raise click.UsageError("give --all, or a filter (--message-id, --order-id, "
                               "--event-type, --reason)")
    if move_task and not everything:
        raise click.UsageError("--move-task replays everything: use it with --all")
    api = state.api()
    if not yes:
        click.confirm(f"Move {'every' if everything else 'the matching'} dead letter of {queue} "
                      "back to it?", abort=True, err=True)
    if move_task:
        state.emit(api.ops("POST", f"/dlq/{queue}/replay", json={"all": True}), _replayed)
        return
    total = _dlq_depth(api, queue)
    if limit is not None:
        total = min(total, limit)
    moved = _replay_in_chunks(state, api, queue, wanted, total)
    answer = {"queue": queue, "moved": moved, "method": "portable"}
    state.emit(answer, _replayed)


def _dlq_depth(api: Api, queue: str) -> int:
    for q in api.ops("GET", "/queues")["queues"]:
        if queue in (q["name"], q["dlq_name"]):
            return q["dlq_visible"] + q["dlq_in_flight"]
    api.ops("GET", f"/dlq/{queue}", params={"limit": 1})  # the API's own 404 for the name
    return 0


def _replay_in_chunks(state: State, api: Api, queue: str, wanted: dict, total: int) -> int:
    """Replay at most ``total`` (the DLQ's depth when we began: a poison message that comes
    back at once must not loop), ``REPLAY_CHUNK`` per request, with a progress bar."""
    moved = 0
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=state.as_json) as progress:
        task = progress.add_task("replay", total=total)
        while moved < total:
            chunk = min(REPLAY_CHUNK, total - moved)
            answer = api.ops("POST", f"/dlq/{queue}/replay", json={**wanted, "limit": chunk})
            moved += answer["moved"]
            progress.update(task, completed=moved)
            if answer["moved"] < chunk:
                break  # nothing more matches
    return moved


def _replayed(console: Console, answer: dict) -> None:
    if answer.get("moved") is None:
        console.print(f"started an SQS message move task for {answer['queue']}; "
                      "watch `orderctl dlq list`")
    else:
        console.print(f"moved {answer['moved']} dead letter(s) back to {answer['queue']} "
                      f"({answer['method']})")


@dlq.command()
@click.argument("queue")
@click.option("--confirm", help="The DLQ's name (asked for when not given).")
@json_option
@pass_state
def purge(state: State, queue: str, confirm: str | None) -> None:
    """Delete every dead letter of QUEUE: confirm with the DLQ's name."""
    api = state.api()
    if confirm is None:
        confirm = click.prompt(f"Type the name of {queue}'s DLQ to delete all of its messages",
                               err=True)
    answer = api.ops("POST", f"/dlq/{queue}/purge", json={"confirm": confirm})
    state.emit(answer, lambda console, a: console.print(
        f"purged {a['dlq']} (about {a['purged_about']} message(s))"))


# -- outboxes ----------------------------------------------------------------------------------
@cli.group()
def outbox() -> None:
    """Outboxes: what each service has not published yet, and retrying failed rows."""


@outbox.command("list")
@json_option
@pass_state
def outbox_list(state: State) -> None:
    """Per service and queue: pending rows, oldest pending age, failed rows with their error."""
    state.emit(state.api().ops("GET", "/outbox")["services"], render.outboxes)


@outbox.command()
@click.argument("service", type=click.Choice(OUTBOX_SERVICES))
@click.option("--id", "ids", multiple=True, type=click.IntRange(1), help="Repeat for several.")
@click.option("--all-failed", is_flag=True, help="Every failed row of SERVICE.")
@json_option
@pass_state
def retry(state: State, service: str, ids, all_failed: bool) -> None:
    """Make SERVICE's failed outbox rows due now (each stream still publishes in order)."""
    if bool(ids) == all_failed:
        raise click.UsageError("give --id (repeatable) or --all-failed")
    body = {"all_failed": True} if all_failed else {"ids": list(ids)}
    answer = state.api().ops("POST", f"/outbox/{service}/retry", json=body)
    state.emit(answer, lambda console, a: console.print(
        f"{a['service']}: {len(a['retried'])} row(s) due now"))


# -- blocked groups ----------------------------------------------------------------------------
@cli.group()
def groups() -> None:
    """FIFO message groups (one per order)."""


@groups.command()
@click.option("--min-age", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Only groups blocked at least this many seconds.")
@json_option
@pass_state
def blocked(state: State, min_age: float) -> None:
    """Orders stuck behind a failing or long in-flight message: since when, and why."""
    answer = state.api().ops("GET", "/groups/blocked", params={"min_age_s": min_age})
    state.emit(answer["services"], render.blocked_groups)


# -- orders ------------------------------------------------------------------------------------
@cli.group()
def orders() -> None:
    """Orders, from the order service (as the operator: every customer's)."""


@orders.command("get")
@click.argument("order_id", type=click.UUID)
@json_option
@pass_state
def orders_get(state: State, order_id: uuid.UUID) -> None:
    """One order with its lines and status history."""
    state.emit(state.api().order("GET", f"/v1/orders/{order_id}"), render.order)


@orders.command("list")
@click.option("--status", help="Only orders in this status.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100))
@json_option
@pass_state
def orders_list(state: State, status: str | None, limit: int) -> None:
    """The newest orders."""
    params = {"limit": limit, **({"status": status} if status else {})}
    state.emit(state.api().order("GET", "/v1/orders", params=params)["items"], render.orders)


# -- tokens and demo data ----------------------------------------------------------------------
@cli.command()
@click.option("--as", "who", type=click.Choice(sorted(IDENTITIES)), default="operator",
              show_default=True, help="Which demo identity.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Repeat for several scopes. Default: everything the identity may have.")
@json_option
@pass_state
def token(state: State, who: str, scopes: tuple[str, ...]) -> None:
    """Print an access token for a demo identity (local development: `make run`'s credentials)."""
    answer = demo_token(state.endpoints, who, scopes)
    click.echo(json.dumps(answer) if state.as_json else answer["access_token"])


@cli.command()
@click.option("--orders", "count", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", "seed_value", type=int, help="Random seed, for the same orders again.")
@click.option("--unpaid", is_flag=True,
              help="Leave the orders in PENDING_PAYMENT (they expire after PAYMENT_TTL).")
@json_option
@pass_state
def seed(state: State, count: int, seed_value: int | None, unpaid: bool) -> None:
    """Place COUNT demo orders as the demo customer, from products in stock, and pay them.

    Paying is what the storefront does after checkout: confirm the order's PaymentIntent
    with Stripe's test payment method. The order then moves to PENDING_SHIPMENT as soon as
    the order worker has applied payment.authorized (asynchronously); the printed orders
    carry the payment's status."""
    customer = state.api("customer")
    products = [p for p in customer.inventory("GET", "/v1/products",
                                              params={"stock_status": "instock"})["items"]
                if p["available"] > 0]
    if not products:
        raise CtlError("the catalog has no product in stock to order", 1)
    pick = random.Random(seed_value)
    placed = []
    for _ in range(count):
        lines = pick.sample(products, k=min(len(products), pick.randint(1, 3)))
        body = {"items": [{"sku": p["sku"], "quantity": pick.randint(1, 3)} for p in lines],
                "customer_email": "demo@example.com", "shipping_address": SEED_ADDRESS}
        order = customer.order("POST", "/v1/orders", json=body,
                               headers={"Idempotency-Key": str(uuid.uuid4())})
        if not unpaid:
            confirmed = customer.payment("POST", f"/v1/payments/{order['id']}/confirm",
                                         json={"payment_method": TEST_PAYMENT_METHOD})
            order["payment"] = {**order.get("payment", {}), "status": confirmed["status"]}
        placed.append(order)
    state.emit(placed, render.orders)


def main() -> int:
    """The console script."""
    try:
        cli.main(standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or OK)
    return OK


if __name__ == "__main__":
    sys.exit(main())
