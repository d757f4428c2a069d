"""shared/openapi.py: each operation's problems, headers and security follow from its decorators."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.views import MethodView
from marshmallow import Schema, fields

from shared.auth import require_any_scope, require_scopes
from shared.errors import PROBLEM_MEDIA_TYPE
from shared.openapi import PROBLEM_REF, response_headers, security_schemes
from shared.ratelimit import rate_limit
from shared.web import Blueprint, ProblemApi

TOKEN_URL = "http://auth.test/oauth/token"


class ThingSchema(Schema):
    name = fields.String(required=True)


class QuerySchema(Schema):
    limit = fields.Integer()


class OwnErrorSchema(Schema):
    error = fields.String(required=True)


def _document() -> dict:
    app = Flask("openapi-test")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = ProblemApi(app, spec_kwargs={"components": {
        "securitySchemes": security_schemes(("orders:read", "orders:write", "admin"), TOKEN_URL)}})
    blp = Blueprint("things", __name__, url_prefix="/v1/things")

    @blp.route("")
    class Things(MethodView):
        @rate_limit("5/minute")
        @blp.response(201, ThingSchema, headers=response_headers("Location"))
        @blp.alt_response(409, description="A thing with this name exists")
        @require_scopes("orders:write")
        @blp.arguments(ThingSchema)
        def post(self, payload):
            """Make a thing."""

        @blp.response(200, ThingSchema(many=True))
        @require_any_scope("orders:read", "admin")
        @blp.arguments(QuerySchema, location="query")
        def get(self, query):
            """List things."""

    @blp.route("/<uuid:thing_id>")
    class ThingById(MethodView):
        @blp.response(204)
        @require_scopes("admin")
        def delete(self, thing_id):
            """Delete a thing."""

    @blp.route("/public", methods=["GET"])
    @blp.response(200, ThingSchema)
    @blp.alt_response(400, schema=OwnErrorSchema, description="its own error body")
    def public():
        """Anyone may look."""

    api.register_blueprint(blp)
    return api.spec.to_dict()


@pytest.fixture(scope="module")
def document() -> dict:
    return _document()


def _statuses(operation: dict) -> set[int]:
    return {int(status) for status in operation["responses"]}


def test_each_operation_declares_the_statuses_its_decorators_can_answer(document):
    paths = document["paths"]
    assert _statuses(paths["/v1/things"]["post"]) == {201, 400, 401, 403, 409, 413, 415, 422, 429,
                                                     500, 503}
    assert _statuses(paths["/v1/things"]["get"]) == {200, 400, 401, 403, 422, 500, 503}
    assert _statuses(paths["/v1/things/{thing_id}"]["delete"]) == {204, 401, 403, 404, 500, 503}
    assert _statuses(paths["/v1/things/public"]["get"]) == {200, 400, 500, 503}  # the database may be down


def test_errors_are_problems_with_their_headers_unless_the_view_says_otherwise(document):
    post = document["paths"]["/v1/things"]["post"]["responses"]
    for status in ("400", "401", "403", "409", "413", "415", "422", "429", "500", "503"):
        assert post[status]["content"] == {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}, status
        assert "X-Request-ID" in post[status]["headers"], status
    assert post["409"]["description"] == "A thing with this name exists"
    assert set(post["401"]["headers"]) == {"X-Request-ID", "WWW-Authenticate"}
    assert set(post["429"]["headers"]) == {"X-Request-ID", "Retry-After"}
    assert post["201"]["headers"]["Location"] == {"$ref": "#/components/headers/Location"}
    assert document["components"]["headers"]["Location"]["required"] is True
    own = document["paths"]["/v1/things/public"]["get"]["responses"]["400"]
    assert list(own["content"]) == ["application/json"]  # the view documented its own body
    components = document["components"]
    assert "Problem" in components["schemas"] and "Error" not in components["schemas"]
    assert all("default" not in operation["responses"] for ops in document["paths"].values()
               for method, operation in ops.items() if method != "parameters")


def test_security_comes_from_the_scope_decorators(document):
    paths = document["paths"]
    assert paths["/v1/things"]["post"]["security"] == [{"oauth2": ["orders:write"]}, {"bearerAuth": []}]
    assert paths["/v1/things"]["get"]["security"] == [
        {"oauth2": ["orders:read"]}, {"oauth2": ["admin"]}, {"bearerAuth": []}]
    assert paths["/v1/things/public"]["get"]["security"] == []
    flows = document["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["password"]["tokenUrl"] == flows["clientCredentials"]["tokenUrl"] == TOKEN_URL
    assert paths["/v1/things"]["post"]["operationId"] == "things_things_post"
    assert paths["/v1/things/{thing_id}"]["delete"]["operationId"] == "things_thing_by_id_delete"


def test_an_undeclared_header_name_is_refused():
    with pytest.raises(KeyError, match="X-Made-Up"):
        response_headers("X-Made-Up")
    assert response_headers(sometimes=("Retry-After",))["Retry-After"]["required"] is False
