"""Auth settings validation and the hashing/encryption helpers (no I/O)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from services.auth.crypto import KeyCipher, PasswordHashing, digest_secret, new_secret, secret_matches
from services.auth.settings import DEV_KEY_ENCRYPTION_KEY, AuthSettings
from shared.config import ConfigError


def test_defaults_are_production_grade():
    cfg = AuthSettings.from_env({})
    assert cfg.access_token_ttl_s == 900
    assert cfg.key_encryption_keys == (DEV_KEY_ENCRYPTION_KEY,)
    assert cfg.argon2_memory_kib >= 64 * 1024
    assert cfg.key_publish_grace_s >= cfg.access_token_ttl_s


def test_production_refuses_the_development_key_encryption_key():
    with pytest.raises(ConfigError, match="AUTH_KEY_ENCRYPTION_KEYS"):
        AuthSettings.from_env({}, app_env="production")
    with pytest.raises(ConfigError, match="development default"):
        AuthSettings.from_env({"AUTH_KEY_ENCRYPTION_KEYS": DEV_KEY_ENCRYPTION_KEY}, app_env="production")
    key = Fernet.generate_key().decode()
    production = AuthSettings.from_env({"AUTH_KEY_ENCRYPTION_KEYS": key}, app_env="production")
    assert production.key_encryption_keys == (key,)


@pytest.mark.parametrize("name, value", [
    ("AUTH_KEY_ENCRYPTION_KEYS", "not-a-fernet-key"),
    ("AUTH_TOKEN_RATE_LIMIT_PER_IP", "lots"),
    ("AUTH_ACCESS_TOKEN_TTL_S", "5"),
    ("AUTH_CUSTOMER_SCOPES", "orders:read superpowers"),
    ("AUTH_RSA_BITS", "1024"),
])
def test_invalid_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError) as info:
        AuthSettings.from_env({name: value})
    assert info.value.variable == name


def test_secret_digests_compare_in_constant_time_and_never_store_the_secret():
    secret = new_secret()
    stored = digest_secret(secret)
    assert secret not in stored and stored.startswith("sha256$")
    assert secret_matches(stored, secret)
    assert not secret_matches(stored, secret + "x")
    assert not secret_matches(None, secret) and not secret_matches("", secret)
    assert new_secret() != secret and len(secret) >= 43  # 256 bits


def test_password_hashing_verifies_and_rehashes_on_new_parameters():
    cheap = PasswordHashing(1, 1024, 1)
    stored = cheap.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert cheap.verify(stored, "correct horse")
    assert not cheap.verify(stored, "wrong horse")
    assert not cheap.verify(None, "correct horse")  # unknown account: same work, no match
    assert not cheap.verify("garbage", "correct horse")
    assert PasswordHashing(2, 1024, 1).needs_rehash(stored)


def test_key_cipher_rotation_keeps_old_ciphertexts_readable():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = KeyCipher((old,)).encrypt(b"private key")
    both = KeyCipher((new, old))
    assert both.decrypt(token) == b"private key"
    assert KeyCipher((new,)).decrypt(both.reencrypt(token)) == b"private key"


def test_revocation_feed_waiters_leave_half_the_threads_for_tokens():
    from types import SimpleNamespace

    from services.auth.app import feed_waiters

    config = SimpleNamespace(revocation_feed_max_waiters=4)
    assert feed_waiters(config, {"GUNICORN_THREADS": "4"}) == 2
    assert feed_waiters(config, {"GUNICORN_THREADS": "16"}) == 4
    assert feed_waiters(config, {"GUNICORN_THREADS": "1"}) == 1
    assert feed_waiters(config, {}) == 4
