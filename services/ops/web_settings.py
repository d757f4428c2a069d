"""Settings of the web pages the ops service serves (``OPS_WEB_*``): the operator
console and the customer tracking page, and the OAuth2 clients they sign in with.

The pages never hold a client secret: they send the user's name and password to
the ops service (``POST /web/session``), which asks the auth service for a
token with the page's first-party client, whose secret is only here.
"""

from __future__ import annotations

from pydantic import SecretStr

from services.ops.settings import Rate
from shared.settings import EnvSettings, var


class WebSettings(EnvSettings):
    """What the ops service's web pages need."""

    console_client_id: str = var("OPS_WEB_CONSOLE_CLIENT_ID", "ops-console",
                                 "first-party client (password grant) operators sign in to the console with")
    console_client_secret: SecretStr | None = var(
        "OPS_WEB_CONSOLE_CLIENT_SECRET", None, "that client's secret; without it the console "
        "cannot sign anyone in", secret=True, shown_default="from `make run`")
    tracking_client_id: str = var("OPS_WEB_TRACKING_CLIENT_ID", "storefront",
                                  "first-party client (password grant) customers sign in to the "
                                  "tracking page with")
    tracking_client_secret: SecretStr | None = var(
        "OPS_WEB_TRACKING_CLIENT_SECRET", None, "that client's secret; without it the tracking "
        "page cannot sign anyone in", secret=True, shown_default="from `make run`")
    order_url: str | None = var("OPS_WEB_ORDER_URL", None, "the order API as the browser reaches "
                                "it (CORS must allow the pages' origin)", shown_default="`ORDER_URL`")
    notification_url: str | None = var("OPS_WEB_NOTIFICATION_URL", None, "the notification API as "
                                       "the browser reaches it", shown_default="`NOTIFICATION_URL`")
    sign_in_rate_limit: Rate = var("OPS_WEB_SIGN_IN_RATE_LIMIT", "10/minute",
                                  "sign-in attempts per client address (429 + `Retry-After`)")
