"""Auth service WSGI app factory."""

from __future__ import annotations

import logging
import os

from authlib.integrations.flask_oauth2 import client_authenticated
from flask import g

from services.auth import api
from services.auth.crypto import KeyCipher, PasswordHashing
from services.auth.keys import SigningKeys
from services.auth.oauth import build_server
from services.auth.revocations import RevocationHub
from services.auth.service import AuthService
from services.auth.settings import SERVICE, AuthSettings, load
from shared.db import database_for
from shared.health import health_blueprint
from shared.logging import configure_logging
from shared.ratelimit import create_limiter
from shared.sigterm import on_worker_sigterm
from shared.web import allow_form_body, base_app


def build_components(settings, config: AuthSettings):
    """Database, password hashing and signing keys (shared by the app and the CLI)."""
    db = database_for(settings)
    passwords = PasswordHashing(config.argon2_time_cost, config.argon2_memory_kib,
                                config.argon2_parallelism)
    keys = SigningKeys(db, KeyCipher(config.key_encryption_keys), config.rsa_bits,
                       config.signing_key_cache_s, config.key_publish_grace_s)
    return db, passwords, keys


def feed_waiters(auth_config, env) -> int:
    """Long-polls of the revocation feed this process lets wait: at most half its threads.

    Each waiting feed request holds a gunicorn thread; with as many waiters as threads (e.g.
    4 and 4 on a small instance) every thread is taken by the services' feeds and token
    requests time out. Half the threads always stay free for tokens.
    """
    threads = int(env.get("GUNICORN_THREADS", "8") or 8)
    return max(1, min(auth_config.revocation_feed_max_waiters, threads // 2))


def create_app(config: dict | None = None):
    """Build the auth API. ``config`` overrides environment variables (tests)."""
    settings, auth_config = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    # Authlib logs whole token responses at DEBUG ("Issue token {...}"): never let
    # them through, whatever LOG_LEVEL says.
    logging.getLogger("authlib").setLevel(logging.INFO)
    app, api_ = base_app(settings, "Auth service")
    api_.spec.components.security_scheme("basicAuth", {"type": "http", "scheme": "basic"})
    api_.spec.components.security_scheme("feedKey", {"type": "http", "scheme": "bearer",
                                                     "description": "AUTH_REVOCATION_FEED_KEY"})
    db, passwords, keys = build_components(settings, auth_config)
    service = AuthService(db, auth_config, passwords)
    hub = RevocationHub(db, feed_waiters(auth_config, os.environ))
    app.extensions.update(db=db, passwords=passwords, signing_keys=keys, auth_config=auth_config,
                          revocation_hub=hub)
    # Long polls of the feed end at once on SIGTERM (the verifiers poll another instance).
    on_worker_sigterm(hub.close)
    app.extensions["oauth_server"] = build_server(app, service, keys, settings.jwt_issuer,
                                                  settings.jwt_audience)

    @client_authenticated.connect_via(app.extensions["oauth_server"])
    def _remember_client(_sender, client=None, **_):
        g.authenticated_client = client.get_client_id() if client else None

    create_limiter(app, settings.rate_limit_storage_uri, auth_config.trusted_proxy_hops)
    app.register_blueprint(health_blueprint({"database": db.ping}))
    api_.register_blueprint(api.oauth)
    api_.register_blueprint(api.well_known)
    api_.register_blueprint(api.customers)
    api_.register_blueprint(api.revocations)
    allow_form_body(app, api.TOKEN_ENDPOINT, api.REVOKE_ENDPOINT)
    api.PROBLEMS.register(app)
    return app
