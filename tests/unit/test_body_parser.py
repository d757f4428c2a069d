"""shared/web.py: BodyParser builds one schema per class, not one per request."""

from __future__ import annotations

from marshmallow import Schema, fields

from shared.web import BodyParser


class _Line(Schema):
    sku = fields.String(required=True)


class _Order(Schema):
    lines = fields.List(fields.Nested(_Line), required=True)


def test_a_schema_class_is_built_once_and_reused_for_every_request():
    parser = BodyParser()
    first = parser._get_schema(_Order, None)
    assert isinstance(first, _Order)
    assert parser._get_schema(_Order, None) is first
    assert BodyParser()._get_schema(_Order, None) is first  # shared by every blueprint's parser


def test_instances_and_other_argmaps_are_left_to_webargs():
    parser = BodyParser()
    given = _Order()
    assert parser._get_schema(given, None) is given
    built = parser._get_schema({"sku": fields.String()}, None)
    assert isinstance(built, Schema) and "sku" in built.fields


def test_the_shared_instance_still_validates_each_body_on_its_own():
    schema = BodyParser()._get_schema(_Order, None)
    assert schema.validate({"lines": [{"sku": "A"}]}) == {}
    assert schema.validate({"lines": [{}]}) == {"lines": {0: {"sku": ["Missing data for required field."]}}}
    assert schema.validate({"lines": [{"sku": "B"}]}) == {}
