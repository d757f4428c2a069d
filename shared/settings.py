"""Typed settings declared once per environment variable, validated at start.

Every variable a process reads is one field of an :class:`EnvSettings`
subclass, declared with :func:`var`: its name, type, default, bounds (or
choices, as a ``Literal``), a one-line description, and whether it is a
secret. The README's configuration tables are generated from these
declarations (``scripts/gen_config_docs.py``), so the documentation cannot
drift from what the code reads.

Reading rules, the same for every variable:

* an unset or blank variable takes its default; values are stripped of
  surrounding whitespace (fields declared with ``strip=False`` keep theirs and
  are unset only when empty);
* a missing required, malformed or out-of-bounds value raises
  :class:`ConfigError` naming the variable, so a bad deployment fails at boot
  with a message an operator can act on;
* :meth:`EnvSettings.from_env` reads only the mapping it is given (the process
  environment when none is), never both: a test's explicit environment is
  never mixed with the one it runs in.

Secrets are typed :class:`pydantic.SecretStr` or :class:`SecretKeys`, whose
reprs never show the value, so a settings object can be logged.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# A variable name containing this is a pattern, e.g. BREAKER_<NAME>_FAIL_MAX.
NAME_PLACEHOLDER = "<NAME>"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigError(RuntimeError):
    """A required environment variable is missing or invalid."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


# --- value parsers (one rule per type, shared by every declaration) --------------------------------
def parse_int(raw: Any) -> int:
    """``int(raw)`` for strings (so ``"2.0"`` is refused, as ``int()`` refuses it)."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"must be an integer, got {raw!r}")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be an integer, got {raw!r}") from None


def parse_float(raw: Any) -> float:
    """``float(raw)`` for strings and numbers."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"must be a number, got {raw!r}")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def parse_bool(raw: Any) -> bool:
    """true/false, 1/0, yes/no or on/off (any case)."""
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def split_commas(raw: Any) -> tuple[str, ...]:
    """A comma-separated list (blank entries dropped); tuples pass through."""
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return tuple(raw)


class SecretKeys(tuple):
    """A tuple of key strings whose repr hides them (key lists such as Fernet keys)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SecretKeys({len(self)} keys)"


Int = Annotated[int, BeforeValidator(parse_int)]
Float = Annotated[float, BeforeValidator(parse_float)]
Bool = Annotated[bool, BeforeValidator(parse_bool)]
CommaList = Annotated[tuple[str, ...], BeforeValidator(split_commas)]
Keys = Annotated[tuple[str, ...], BeforeValidator(split_commas), AfterValidator(SecretKeys)]


FERNET_KEY_BYTES = 32  # what cryptography.fernet.Fernet accepts, url-safe base64 encoded


def fernet_keys(how_to_make_one: str):
    """A ``Keys`` type whose every entry must be a Fernet key; the error says how to make one."""

    def check(keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            try:
                decoded = base64.urlsafe_b64decode(key.encode())
            except ValueError:
                decoded = b""
            if len(decoded) != FERNET_KEY_BYTES:
                raise ValueError("each key must be a Fernet key (32 url-safe base64 bytes); "
                                 + how_to_make_one)
        return keys

    return Annotated[Keys, AfterValidator(check)]


def var(name: str, default: Any = ..., description: str = "", *, ge: float | None = None,
        le: float | None = None, secret: bool = False, strip: bool = True,
        shown_default: str | None = None, production: str | None = None) -> Any:
    """Declare one environment variable as a settings field.

    ``shown_default`` replaces the default in the generated documentation
    (e.g. for a development key); ``production`` says how ``APP_ENV=production``
    treats it (e.g. "required", "refused"), checked by the class's
    :meth:`EnvSettings.check`.
    """
    extra = {"secret": secret, "strip": strip, "shown_default": shown_default, "production": production}
    # A secret held as a plain string (a URL with a password) is kept out of the repr too.
    return Field(default, validation_alias=name, description=description, ge=ge, le=le,
                 json_schema_extra=extra, repr=not secret)


class _MappingSource(PydanticBaseSettingsSource):
    """A settings source over one given mapping, keyed by each field's variable name.

    pydantic-settings' own ``EnvSettingsSource`` reads ``os.environ`` only; app
    factories and tests hand in an explicit mapping (``{**os.environ, **overrides}``),
    and pattern variables (``BREAKER_<NAME>_*``) need their name filled in.
    """

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str], name: str | None):
        super().__init__(settings_cls)
        self._env = env
        self._name = name

    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        # Keyed by field name: a pattern variable's filled-in name is no alias pydantic knows.
        fields = self.settings_cls.model_fields
        for variable, field_name in self.settings_cls.variables(self._name).items():
            field = fields[field_name]
            raw = self._env.get(variable)
            if not isinstance(raw, str):
                continue
            keep_whitespace = not (field.json_schema_extra or {}).get("strip", True)
            if keep_whitespace:
                if raw != "":
                    values[field_name] = raw
            elif raw.strip():
                values[field_name] = raw.strip()
        return values


class EnvSettings(BaseSettings):
    """Base of every settings class: frozen, built only by :meth:`from_env` or by keyword."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True,
                                      case_sensitive=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_others):
        # Only what from_env (or a caller's keywords) hands in: never os.environ or a .env
        # file behind the caller's back.
        return (init_settings,)

    @classmethod
    def variables(cls, name: str | None = None) -> dict[str, str]:
        """Variable name -> field name, with ``<NAME>`` patterns filled in from ``name``."""
        out = {}
        for field_name, field in cls.model_fields.items():
            variable = field.validation_alias
            if isinstance(variable, str):
                if name is not None:
                    variable = variable.replace(NAME_PLACEHOLDER, name)
                out[variable] = field_name
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, app_env: str = "development",
                 name: str | None = None) -> Self:
        """Read and validate every declared variable from ``env`` (default ``os.environ``).

        ``app_env`` is the deployment's APP_ENV, for :meth:`check`; ``name`` fills
        ``<NAME>`` in pattern variables.
        """
        env = os.environ if env is None else env
        values = _MappingSource(cls, env, name)()
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise _config_error(cls, exc, name) from None
        settings.check(app_env)
        return settings

    def check(self, app_env: str) -> None:
        """Rules across variables or tied to APP_ENV (production refusals); override to add."""

    def was_set(self, field_name: str) -> bool:
        """Whether the environment set this field (rather than the default applying)."""
        return field_name in self.model_fields_set

    @classmethod
    def variable_of(cls, field_name: str, name: str | None = None) -> str:
        """The environment variable of ``field_name``."""
        alias = cls.model_fields[field_name].validation_alias
        return alias.replace(NAME_PLACEHOLDER, name) if name is not None else alias


def choices_of(annotation: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation."""
    if get_origin(annotation) is Literal:
        return tuple(get_args(annotation))
    for arg in get_args(annotation):
        if get_origin(arg) is Literal:
            return tuple(get_args(arg))
    return None


def bounds_text(field) -> str:
    """"between A and B", ">= A" or "<= B" from a field's constraints ("" when unbounded)."""
    ge = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    le = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    if ge is not None and le is not None:
        return f"between {ge} and {le}"
    if ge is not None:
        return f">= {ge}"
    if le is not None:
        return f"<= {le}"
    return ""


def _config_error(cls: type[EnvSettings], exc: ValidationError, name: str | None) -> ConfigError:
    """The first problem of ``exc`` as a :class:`ConfigError` naming its variable."""
    error = exc.errors()[0]
    loc = str(error["loc"][0]) if error["loc"] else ""
    field = None
    if loc in cls.model_fields:
        loc, field = cls.variable_of(loc, name), cls.model_fields[loc]
    kind, given = error["type"], error.get("input")
    if kind == "missing":
        problem = "is required but not set"
    elif kind == "value_error":
        problem = str(error["ctx"]["error"])
    elif kind in ("greater_than_equal", "less_than_equal") and field is not None:
        problem = f"must be {bounds_text(field)}, got {given}"
    elif kind == "literal_error" and field is not None:
        problem = f"must be one of {', '.join(choices_of(field.annotation) or ())}, got {given!r}"
    else:
        problem = f"{error['msg']}, got {given!r}"
    return ConfigError(loc or cls.__name__, problem)


def secret_value(value: SecretStr | str | None) -> str | None:
    """The plain value of a secret field (None stays None)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value
