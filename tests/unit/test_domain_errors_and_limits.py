"""Domain errors become problems through one table per service; rate limits declared on views
bind to each app's own limiter; child rows are grouped by parent (no I/O)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.views import MethodView

from shared.errors import DomainError, NotFound, Problem, ProblemMap, register_problem_handlers
from shared.ratelimit import create_limiter, rate_limit
from shared.rows import grouped


class Refused(DomainError):
    pass


class RefusedHarder(Refused):
    pass


class Unmapped(DomainError):
    pass


PROBLEMS = ProblemMap({
    Refused: (409, "Refused", "refused"),
    RefusedHarder: lambda exc: Problem(422, "Refused harder", exc.detail, "refused-harder",
                                       headers={"Retry-After": "7"}),
})


def test_a_rule_builds_the_problem_from_the_errors_detail_fields_and_facts():
    problem = PROBLEMS.problem(Refused("No.", errors=[{"field": "x", "message": "Bad."}],
                                       status_now="SHIPPED"))
    assert (problem.status, problem.title, problem.detail, problem.type) == (
        409, "Refused", "No.", "refused")
    assert problem.errors == [{"field": "x", "message": "Bad."}]
    assert problem.extensions == {"status_now": "SHIPPED"}


def test_the_most_specific_rule_wins_and_not_found_is_always_declared():
    harder = PROBLEMS.problem(RefusedHarder("Really no."))
    assert (harder.status, harder.type, harder.headers) == (422, "refused-harder", {"Retry-After": "7"})
    missing = PROBLEMS.problem(NotFound("No such thing."))
    assert (missing.status, missing.title, missing.type) == (404, "Not Found", "not-found")


def test_an_error_without_a_rule_is_not_guessed():
    with pytest.raises(LookupError):
        PROBLEMS.problem(Unmapped("?"))


@pytest.fixture
def client():
    app = Flask(__name__)
    register_problem_handlers(app)
    PROBLEMS.register(app)

    @app.get("/refused")
    def refused():
        raise RefusedHarder("Really no.")

    @app.get("/unmapped")
    def unmapped():
        raise Unmapped("internal detail")

    return app.test_client()


def test_registered_rules_answer_with_problem_documents(client):
    response = client.get("/refused")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "7"
    assert response.json["type"] == "/problems/refused-harder"
    assert response.json["detail"] == "Really no."


def test_an_unmapped_domain_error_is_a_generic_500(client):
    response = client.get("/unmapped")
    assert response.status_code == 500
    assert "internal detail" not in response.get_data(as_text=True)


# --- rate limits declared on views ------------------------------------------------------------
def _limited_app(rate: str) -> Flask:
    app = Flask(__name__)
    app.config["RATE"] = rate
    register_problem_handlers(app)

    @app.post("/twice")
    @rate_limit("50/minute", key=lambda: "outer")
    @rate_limit(lambda: app.config["RATE"], key=lambda: "inner")
    def twice():
        return "ok"

    class Things(MethodView):
        @rate_limit("1/minute")
        def post(self):
            return "made"

        def get(self):
            return "read"

    app.add_url_rule("/things", view_func=Things.as_view("things"))
    create_limiter(app)
    return app


def test_each_app_counts_with_its_own_limiter_and_rate():
    strict, lenient = _limited_app("2/minute").test_client(), _limited_app("3/minute").test_client()
    assert [strict.post("/twice").status_code for _ in range(3)] == [200, 200, 429]
    assert [lenient.post("/twice").status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = strict.post("/twice")
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_method_view_limits_only_the_declared_method():
    client = _limited_app("5/minute").test_client()
    assert [client.post("/things").status_code for _ in range(2)] == [200, 429]
    assert [client.get("/things").status_code for _ in range(3)] == [200, 200, 200]


# --- child rows -----------------------------------------------------------------------------
def test_grouped_keeps_order_takes_the_key_out_and_lists_every_parent():
    rows = [{"parent": 1, "n": "a"}, {"parent": 2, "n": "b"}, {"parent": 1, "n": "c"}]
    assert grouped(rows, "parent", [1, 2, 3]) == {1: [{"n": "a"}, {"n": "c"}], 2: [{"n": "b"}],
                                                  3: []}
    assert grouped([], "parent") == {}
