"""Which secrets are too weak to start with: short or well-known static tokens, and empty or
well-known Kafka passwords. Every check says why without showing the value."""

from __future__ import annotations

import re

MIN_TOKEN_LENGTH = 32
MIN_PASSWORD_LENGTH = 8

# Words people put in a secret when they mean "fill this in later".
KNOWN_WEAK_WORDS = (
    "changeme",
    "change-me",
    "secret",
    "password",
    "passwd",
    "token",
    "test",
    "dev",
    "admin",
    "packline",
    "default",
    "example",
    "letmein",
    "qwerty",
    "kafka",
    "postgres",
)
# Literal values our own docs, scripts and tests have shown (the static token's subject among
# them): whoever copied one configured a secret that is public. Our docs show none any more;
# tests generate theirs.
KNOWN_EXAMPLE_VALUES = frozenset(
    {"packline-dev-token", "packline-dev-secret", "console-test-token", "static-token"}
)
_WEAK_WORD = re.compile("|".join(re.escape(word) for word in KNOWN_WEAK_WORDS))
_SEPARATORS = re.compile(r"[^a-z0-9]")
# What is left of a token after its well-known words and separators: at least this much, with
# at least this many different characters (a random 32-character hex token has about 14).
_MIN_OWN_CHARACTERS = 16
_MIN_DIFFERENT_CHARACTERS = 8
GENERATE_HINT = "generate one, e.g. `openssl rand -hex 32`"


def token_weakness(token: str) -> str | None:
    """Why ``token`` may not be a static bearer token, or None when it may."""
    lowered = token.strip().lower()
    if lowered in KNOWN_EXAMPLE_VALUES or lowered in KNOWN_WEAK_WORDS:
        return "is a well-known example or default value"
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters"
    own = _SEPARATORS.sub("", _WEAK_WORD.sub("", lowered))
    if len(own) < _MIN_OWN_CHARACTERS or len(set(own)) < _MIN_DIFFERENT_CHARACTERS:
        return "is made of well-known words or repeated characters"
    return None


def password_weakness(password: str, username: str | None = None) -> str | None:
    """Why ``password`` may not be a (Kafka SASL) password, or None when it may."""
    stripped = password.strip()
    if not stripped:
        return "is empty"
    lowered = stripped.lower()
    if lowered in KNOWN_WEAK_WORDS:
        return "is a well-known default value"
    if username is not None and lowered == username.strip().lower():
        return "is the user name"
    if len(stripped) < MIN_PASSWORD_LENGTH:
        return f"is shorter than {MIN_PASSWORD_LENGTH} characters"
    return None
