"""Marshmallow building blocks every service's schemas share, and walks over a schema's fields."""

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, fields


class StrictSchema(Schema):
    """Unknown fields are an error, never silently dropped."""

    class Meta:
        unknown = RAISE


def required_fields(schema: Schema, prefix: str = "") -> list[str]:
    """Dotted paths of the required fields of ``schema``, nested schemas included."""
    paths = []
    for name, field in schema.fields.items():
        if field.required:
            paths.append(prefix + name)
        nested = nested_schema(field)
        if nested is not None:
            paths.extend(required_fields(nested, f"{prefix}{name}."))
    return paths


def undeclared_fields(schema: Schema, data: Any, prefix: str = "") -> list[str]:
    """Dotted paths (list items by index) of keys in ``data`` that ``schema`` does not declare."""
    if not isinstance(data, Mapping):
        return []  # not an object: the schema's own validation reports it
    declared = {field.data_key or name: field for name, field in schema.fields.items()}
    found = []
    for key, value in data.items():
        field = declared.get(key)
        if field is None:
            found.append(f"{prefix}{key}")
            continue
        nested = nested_schema(field)
        if nested is None:
            continue
        if isinstance(field, fields.List):
            for index, item in enumerate(value if isinstance(value, list) else []):
                found.extend(undeclared_fields(nested, item, f"{prefix}{key}.{index}."))
        else:
            found.extend(undeclared_fields(nested, value, f"{prefix}{key}."))
    return found


def nested_schema(field: fields.Field) -> Schema | None:
    if isinstance(field, fields.List):
        field = field.inner
    return field.schema if isinstance(field, fields.Nested) else None
