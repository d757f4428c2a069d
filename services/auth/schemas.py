"""marshmallow schemas of the auth API (and OpenAPI documentation of its form bodies)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from services.auth.revocations import MAX_WAIT_S as MAX_FEED_WAIT_S
from shared.auth import SCOPES
from shared.schemas import StrictSchema

MAX_USERNAME_CHARS = 254
MAX_PASSWORD_CHARS = 1024  # the policy (AUTH_PASSWORD_MAX_LENGTH) is checked after parsing


class RegisterCustomerSchema(Schema):
    username = fields.Email(required=True, validate=validate.Length(max=MAX_USERNAME_CHARS),
                            metadata={"description": "The customer's e-mail address."})
    password = fields.String(required=True, load_only=True,
                             validate=validate.Length(min=1, max=MAX_PASSWORD_CHARS))


class CustomerSchema(Schema):
    id = fields.String(required=True, metadata={"description": "The customer id (token `sub`)."})
    username = fields.String(required=True)
    scopes = fields.List(fields.String(), required=True)
    created_at = fields.DateTime(required=True)


class LogoutSchema(Schema):
    everywhere = fields.Boolean(load_default=False, metadata={
        "description": "Revoke every session of this user, not only the token's session."})


class TokenResponseSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True)
    scope = fields.String()
    refresh_token = fields.String()


class OAuthErrorSchema(Schema):
    error = fields.String(required=True)
    error_description = fields.String()


class JwkSchema(Schema):
    kty = fields.String(required=True)
    kid = fields.String(required=True)
    use = fields.String()
    alg = fields.String()
    n = fields.String()
    e = fields.String()


class JwksSchema(Schema):
    keys = fields.List(fields.Nested(JwkSchema), required=True)


TOKEN_REQUEST_DOC = {
    "required": True,
    "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials", "password", "refresh_token"]},
            "scope": {"type": "string", "description": f"Space-separated, among: {' '.join(SCOPES)}"},
            "username": {"type": "string", "description": "password grant"},
            "password": {"type": "string", "description": "password grant"},
            "refresh_token": {"type": "string", "description": "refresh_token grant"},
            "client_id": {"type": "string", "description": "client_secret_post (else HTTP Basic)"},
            "client_secret": {"type": "string", "description": "client_secret_post (else HTTP Basic)"},
        }}}},
}

REVOKE_REQUEST_DOC = {
    "required": True,
    "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string", "enum": ["refresh_token", "access_token"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        }}}},
}


class RevocationFeedQuerySchema(StrictSchema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**63 - 1), metadata={
        "description": "The cursor of the previous answer (0: from the start)"})
    wait = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=MAX_FEED_WAIT_S),
                        metadata={"description": "Seconds to wait for a new entry (long poll)"})


class RevocationSchema(Schema):
    jti = fields.String(required=True, metadata={"description": "The revoked access token's jti"})
    exp = fields.Integer(required=True, metadata={"description": "Its expiry (epoch seconds)"})


class RevocationFeedSchema(Schema):
    revocations = fields.List(fields.Nested(RevocationSchema), required=True)
    cursor = fields.Integer(required=True, metadata={"description": "Pass as `after` next time"})
    reset = fields.Boolean(required=True, metadata={
        "description": "The cursor was unknown: these are all live entries; replace the set"})
    more = fields.Boolean(required=True, metadata={"description": "A full page: ask again at once"})
