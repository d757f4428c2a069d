"""Marshmallow building blocks every service's schemas share."""

from marshmallow import RAISE, Schema


class StrictSchema(Schema):
    """Unknown fields are an error, never silently dropped."""

    class Meta:
        unknown = RAISE
