"""The shipping address's country must be a real ISO 3166-1 alpha-2 code.

Two capital letters are not enough: ``ZZ`` (user-assigned, no country) and
``XX`` are refused with a problem naming ``shipping_address.country`` and
nothing is written; assigned codes such as ``DE`` and ``JP`` are accepted.
The codes stay upper case as before: ``de`` is refused, not folded.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from psycopg2 import sql

ORDER_TABLES = ("orders", "order_lines", "order_status_history", "outbox", "idempotency_keys")
ORDER = {
    "items": [{"sku": "SKU-1", "quantity": 1}],
    "customer_email": "ada@example.com",
    "shipping_address": {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin",
                         "postal_code": "10115", "country": "DE"},
}


def _to(country: str) -> dict:
    body = copy.deepcopy(ORDER)
    body["shipping_address"]["country"] = country
    return body


def _counts(db) -> dict[str, int]:
    with db.transaction() as cur:
        counts = {}
        for table in ORDER_TABLES:
            cur.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table)))
            counts[table] = cur.fetchone()["n"]
        return counts


@pytest.mark.parametrize("country", ["ZZ", "XX", "AA", "de", "De", "DEU", "D"])
def test_an_unassigned_or_malformed_country_is_refused_and_writes_nothing(
        order_client, order_db, auth_header, catalog, country):
    before = _counts(order_db)
    response = order_client.post("/v1/orders", json=_to(country),
                                 headers={**auth_header(), "Idempotency-Key": f"c-{uuid.uuid4()}"})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "/problems/validation-error"
    assert [e["field"] for e in problem["errors"]] == ["shipping_address.country"], problem
    assert _counts(order_db) == before


@pytest.mark.parametrize("country", ["DE", "JP", "US", "ZA"])
def test_an_assigned_country_is_accepted_and_stored_as_given(order_client, order_db, auth_header,
                                                             catalog, country):
    response = order_client.post("/v1/orders", json=_to(country), headers=auth_header())
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["shipping_address"]["country"] == country
    with order_db.transaction() as cur:
        cur.execute("SELECT shipping_address FROM orders WHERE id = %s", (response.get_json()["id"],))
        assert cur.fetchone()["shipping_address"]["country"] == country
