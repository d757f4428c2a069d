"""Management CLI of the auth service (reads the same environment as the service).

    python -m services.auth.cli create-client --name "DHL" --scope shipments:write \\
        --grant client_credentials --carrier DHL
    python -m services.auth.cli rotate-client-secret CLIENT_ID [--grace-s 3600]
    python -m services.auth.cli bind-carrier CLIENT_ID DHL  |  bind-carrier CLIENT_ID --none
    python -m services.auth.cli delete-client CLIENT_ID
    python -m services.auth.cli list-clients
    python -m services.auth.cli ensure-client --client-id order-service --name "Order service" \\
        --scope inventory:reserve --scope payments:create --scope shipments:cancel \\
        --secret-env ORDER_CLIENT_SECRET
    python -m services.auth.cli create-operator ops@example.com      (password prompted)
    python -m services.auth.cli create-customer shopper@example.com  (password prompted)
    python -m services.auth.cli rotate-keys [--activate-after-s 30]
    python -m services.auth.cli list-keys | prune-keys
    python -m services.auth.cli new-encryption-key | reencrypt-keys
    python -m services.auth.cli disable-user NAME | unlock-account NAME

Secrets (client secrets) are printed once, on stdout, and never logged;
``--json`` prints machine-readable output for scripts.
"""

from __future__ import annotations

import json
import os
import sys

import click
from cryptography.fernet import Fernet

from services.auth import handlers
from services.auth.oauth_models import GRANT_TYPES
from services.auth.settings import load
from shared.auth import SCOPES
from shared.config import ConfigError
from shared.logging import configure_logging


class Context:
    """Settings and components, built on first use (some commands need no database)."""

    def __init__(self):
        self._built = None

    def get(self):
        if self._built is None:
            from services.auth.app import build_components

            try:
                settings, config = load(os.environ)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            # Command output goes to stdout; logs (never carrying secrets) to stderr.
            configure_logging("auth-cli", "WARNING", settings.log_format)
            self._built = (settings, config, *build_components(settings, config))
        return self._built

    @property
    def db(self):
        return self.get()[2]


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def _fail(exc: Exception):
    raise click.ClickException(str(exc)) from None


CARRIER_HELP = ("A carrier's client: the carrier id on its shipments (e.g. DHL). Its tokens "
                "reach only that carrier's shipments; a client holding shipments scopes "
                "without one reaches none.")


def _emit(as_json: bool, data: dict, text: str) -> None:
    click.echo(json.dumps(data, default=str) if as_json else text)


@click.group()
def cli():
    """Manage the auth service: clients, accounts, signing keys."""


@cli.command("create-client")
@click.option("--name", required=True, help="Human name, e.g. 'Storefront' or 'DHL'.")
@click.option("--client-id", help="Default: derived from the name plus a random suffix.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES), required=True,
              help="Scopes the client may ask for (repeat).")
@click.option("--grant", "grants", multiple=True, type=click.Choice(GRANT_TYPES),
              default=("client_credentials",), show_default=True, help="Grant types (repeat).")
@click.option("--first-party", is_flag=True, help="Our own app: may use the password grant.")
@click.option("--carrier", help=CARRIER_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def create_client(ctx, name, client_id, scopes, grants, first_party, carrier, as_json):
    """Register a client and print its secret (shown only now)."""
    try:
        creds = handlers.create_client(ctx.db, name, scopes, grants, first_party, client_id,
                                       carrier=handlers.check_carrier(carrier))
    except handlers.AuthError as exc:
        _fail(exc)
    _emit(as_json, {"client_id": creds.client_id, "client_secret": creds.client_secret},
          f"client_id:     {creds.client_id}\nclient_secret: {creds.client_secret}\n"
          "Store the secret now: only its hash is kept.")


@cli.command("ensure-client")
@click.option("--client-id", required=True)
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES), required=True)
@click.option("--grant", "grants", multiple=True, type=click.Choice(GRANT_TYPES),
              default=("client_credentials",), show_default=True)
@click.option("--secret-env", required=True, metavar="VAR",
              help="Environment variable holding the secret the client must have.")
@click.option("--carrier", help=CARRIER_HELP)
@pass_ctx
def ensure_client(ctx, client_id, name, scopes, grants, secret_env, carrier):
    """Create the client with the secret in $VAR, or give an existing one that secret (idempotent).

    For deployments whose secret store already holds a service's credentials
    (docker compose gives the order service its own this way). With ``--carrier`` an
    existing client is also bound to that carrier.
    """
    from services.auth import repository as repo
    from services.auth.crypto import secret_matches

    secret = os.environ.get(secret_env, "")
    if not secret:
        raise click.ClickException(f"{secret_env} is empty")
    with ctx.db.transaction() as cur:
        row = repo.get_client(cur, client_id)
    try:
        handlers.check_carrier(carrier)
        if row is None:
            handlers.create_client(ctx.db, name, scopes, grants, False, client_id, secret,
                                   carrier=carrier)
            click.echo(f"created {client_id}")
            return
        changed = False
        if not secret_matches(row["secret_hash"], secret):
            handlers.rotate_client_secret(ctx.db, client_id, 0, secret)
            click.echo(f"{client_id}: secret set from {secret_env}")
            changed = True
        if carrier is not None and row["carrier"] != carrier:
            handlers.bind_client_carrier(ctx.db, client_id, carrier)
            click.echo(f"{client_id}: bound to carrier {carrier}")
            changed = True
        if not changed:
            click.echo(f"{client_id}: already there")
    except handlers.AuthError as exc:
        _fail(exc)


@cli.command("rotate-client-secret")
@click.argument("client_id")
@click.option("--grace-s", default=0, show_default=True, type=click.IntRange(0, 7 * 24 * 3600),
              help="How long the old secret keeps working (roll out the new one meanwhile).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def rotate_client_secret(ctx, client_id, grace_s, as_json):
    """Give a client a new secret."""
    try:
        creds = handlers.rotate_client_secret(ctx.db, client_id, grace_s)
    except handlers.AuthError as exc:
        _fail(exc)
    _emit(as_json, {"client_id": creds.client_id, "client_secret": creds.client_secret},
          f"client_id:     {creds.client_id}\nclient_secret: {creds.client_secret}\n"
          + (f"The old secret works for {grace_s} more seconds." if grace_s else
             "The old secret no longer works."))


@cli.command("bind-carrier")
@click.argument("client_id")
@click.argument("carrier", required=False)
@click.option("--none", "unbind", is_flag=True, help="Bind the client to no carrier.")
@pass_ctx
def bind_carrier(ctx, client_id, carrier, unbind):
    """Bind an existing client to a carrier (its next tokens reach only that carrier's shipments)."""
    if bool(carrier) == unbind:
        raise click.UsageError("give a CARRIER or --none")
    try:
        handlers.bind_client_carrier(ctx.db, client_id, None if unbind else carrier)
    except handlers.AuthError as exc:
        _fail(exc)
    click.echo(f"{client_id}: " + ("bound to no carrier" if unbind else f"bound to carrier {carrier}")
               + ". Access tokens already issued keep their claim until they expire.")


@cli.command("delete-client")
@click.argument("client_id")
@pass_ctx
def delete_client(ctx, client_id):
    """Delete a client: no more tokens for it; its refresh tokens are revoked."""
    try:
        revoked = handlers.delete_client(ctx.db, client_id)
    except handlers.AuthError as exc:
        _fail(exc)
    click.echo(f"deleted {client_id}; {revoked} refresh token(s) revoked. Access tokens already "
               "issued expire within AUTH_ACCESS_TOKEN_TTL_S.")


@cli.command("list-clients")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_clients(ctx, as_json):
    """Every client (never their secrets)."""
    from services.auth import repository as repo

    with ctx.db.transaction() as cur:
        rows = repo.list_clients(cur)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for row in rows:
        state = "deleted" if row["deleted_at"] else "active"
        carrier = f"carrier {row['carrier']}" if row["carrier"] else ""
        click.echo(f"{row['client_id']:<32} {state:<8} {'first-party' if row['first_party'] else '':<12}"
                   f"{carrier:<16}{','.join(row['grant_types']):<40} {' '.join(row['allowed_scopes'])}")


def _create_user(ctx, username, password, role, scopes, update):
    settings, config, db, passwords, _keys = ctx.get()
    try:
        user_id = handlers.create_user(db, passwords, config, username, password, role,
                                       list(scopes) or None, update_existing=update)
    except handlers.AuthError as exc:
        _fail(exc)
    click.echo(f"{role} {username}: id {user_id}")


_password_option = click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True,
    envvar="AUTH_NEW_USER_PASSWORD", help="Prompted when omitted (or AUTH_NEW_USER_PASSWORD).")


@cli.command("create-operator")
@click.argument("username")
@_password_option
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Default: every scope, admin included.")
@click.option("--update", is_flag=True, help="Reset the password/scopes of an existing account.")
@pass_ctx
def create_operator(ctx, username, password, scopes, update):
    """Create an operator account (logs in through a first-party client allowed 'admin')."""
    _create_user(ctx, username, password, "operator", scopes, update)


@cli.command("create-customer")
@click.argument("username")
@_password_option
@click.option("--update", is_flag=True, help="Reset the password of an existing account.")
@pass_ctx
def create_customer(ctx, username, password, update):
    """Create a customer account (as the storefront's registration would)."""
    _create_user(ctx, username, password, "customer", (), update)


@cli.command("disable-user")
@click.argument("username")
@pass_ctx
def disable_user(ctx, username):
    """Disable an account and revoke its sessions."""
    try:
        handlers.disable_user(ctx.db, username)
    except handlers.AuthError as exc:
        _fail(exc)
    click.echo(f"disabled {username}")


@cli.command("unlock-account")
@click.argument("username")
@pass_ctx
def unlock_account(ctx, username):
    """Clear the failed-login lock-out of an account name."""
    handlers.unlock_account(ctx.db, username)
    click.echo(f"unlocked {username}")


@cli.command("rotate-keys")
@click.option("--activate-after-s", type=click.IntRange(0, 3600), default=None,
              help="Publish now, sign from this many seconds on (default AUTH_KEY_ACTIVATION_DELAY_S).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def rotate_keys(ctx, activate_after_s, as_json):
    """Create a new signing key; the current one retires once its tokens have expired."""
    _settings, config, _db, _passwords, keys = ctx.get()
    delay = config.key_activation_delay_s if activate_after_s is None else activate_after_s
    result = keys.rotate(delay)
    _emit(as_json, {"kid": result.kid, "activates_in_s": delay, "retired": result.retired,
                    "old_keys_published_for_s": delay + config.key_publish_grace_s},
          f"new signing key {result.kid}: published now, signs in {delay}s; "
          f"{result.retired} older key(s) stay published {delay + config.key_publish_grace_s}s more.")


@cli.command("list-keys")
@pass_ctx
def list_keys(ctx):
    """Signing keys with their activation and publication windows."""
    from services.auth import repository as repo

    with ctx.db.transaction() as cur:
        rows = repo.all_signing_keys(cur)
    for row in rows:
        click.echo(f"{row['kid']}  activates {row['activates_at']:%Y-%m-%d %H:%M:%S}  "
                   f"published until {row['publish_until'] or '-'}  "
                   f"{'SIGNING' if row['usable'] else ''}")


@cli.command("prune-keys")
@pass_ctx
def prune_keys(ctx):
    """Delete keys whose publication window has ended."""
    click.echo(f"deleted {ctx.get()[4].prune()} expired key(s)")


@cli.command("new-encryption-key")
def new_encryption_key():
    """Print a new key for AUTH_KEY_ENCRYPTION_KEYS (put it first, keep the old ones after it)."""
    click.echo(Fernet.generate_key().decode())


@cli.command("reencrypt-keys")
@pass_ctx
def reencrypt_keys(ctx):
    """Re-encrypt every private key under the first AUTH_KEY_ENCRYPTION_KEYS key."""
    click.echo(f"re-encrypted {ctx.get()[4].reencrypt_all()} key(s)")


def main() -> None:
    cli(prog_name="python -m services.auth.cli")


if __name__ == "__main__":
    sys.exit(main())
