"""``packline-issuer``: a small OpenID Connect issuer for development and tests, so nothing needs
an outside provider. It keeps EC P-256 signing keys in a local file (created on first use, mode
0600), mints access tokens with the claims Packline reads, and serves its
``/.well-known/openid-configuration`` and JWKS (``/jwks.json``) over HTTP.

    packline-issuer serve --port 8090                  # JWKS and discovery document
    packline-issuer mint --sub sam --name "Sam Lee" --role reception --clinic northside
    packline-issuer rotate                             # a new signing key; the old one is still
                                                       # published until --drop-old

The issuer URL (the tokens' ``iss``), the audience and the key file come from options or from
``PACKLINE_OIDC_ISSUER``, ``PACKLINE_OIDC_AUDIENCE`` and ``PACKLINE_ISSUER_KEY_FILE``. It is
not a login server: it signs whatever it is asked to, for whoever can run it. Production uses a
real provider (docs/identity.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

ALGORITHM = "ES256"
RSA_ALGORITHM = "RS256"
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
DEFAULT_ISSUER = "http://127.0.0.1:8090"
DEFAULT_AUDIENCE = "packline"
DEFAULT_KEY_FILE = "packline-issuer-keys.json"


class WeakKey(SystemExit):
    """A key in the key file is too weak to sign with (the issuer refuses to start)."""


class Keys:
    """The issuer's signing keys, newest last; the newest signs, all are published. Its own
    keys are EC P-256; an RSA key put in the file signs RS256 and must have 2048 bits or more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            self._write([_new_key()])
        for key in self._read():
            _check_strength(key["kid"], _load(key), path)

    def _read(self) -> list[dict[str, str]]:
        keys = json.loads(self.path.read_text())["keys"]
        assert isinstance(keys, list)
        return keys

    def _write(self, keys: list[dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_suffix(".tmp")
        fresh.touch(mode=0o600)
        fresh.write_text(json.dumps({"keys": keys}, indent=1))
        os.replace(fresh, self.path)

    def rotate(self, *, drop_old: bool = False) -> str:
        keys = [] if drop_old else self._read()
        key = _new_key()
        self._write([*keys, key])
        return key["kid"]

    def signing(self) -> tuple[str, Any]:
        newest = self._read()[-1]
        private = _load(newest)
        _check_strength(newest["kid"], private, self.path)
        return newest["kid"], private

    def jwks(self) -> dict[str, Any]:
        published = []
        for key in self._read():
            private = _load(key)
            _check_strength(key["kid"], private, self.path)
            if isinstance(private, rsa.RSAPrivateKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
            else:
                assert isinstance(private, ec.EllipticCurvePrivateKey)
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
            alg = algorithm_of(private)
            published.append({**jwk, "kid": key["kid"], "use": "sig", "alg": alg})
        return {"keys": published}


def _load(key: dict[str, str]) -> Any:
    return serialization.load_pem_private_key(key["pem"].encode(), password=None)


def _check_strength(kid: str, private: Any, path: Path) -> None:
    """Refuses a key too weak to sign staff tokens with, naming it (never showing it)."""
    where = f"PACKLINE_ISSUER_KEY_FILE ({path}): key {kid}"
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise WeakKey(
                f"{where} is an RSA key of {private.key_size} bits; at least {MIN_RSA_BITS} "
                "are required (or rotate to a new EC P-256 key: packline-issuer rotate --drop-old)"
            )
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        if private.curve.key_size < MIN_EC_BITS:
            raise WeakKey(
                f"{where} is an EC key on {private.curve.name}; at least {MIN_EC_BITS} bits "
                "(P-256) are required"
            )
    else:
        raise WeakKey(f"{where} is neither an RSA nor an EC key")


def algorithm_of(private: Any) -> str:
    """The JWS algorithm a key signs with: RS256 for RSA, ES256 for the issuer's own keys."""
    return RSA_ALGORITHM if isinstance(private, rsa.RSAPrivateKey) else ALGORITHM


def _new_key() -> dict[str, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {"kid": uuid.uuid4().hex[:16], "pem": pem}


def mint(
    keys: Keys,
    *,
    issuer: str,
    audience: str,
    sub: str,
    role: str,
    name: str | None = None,
    clinics: Sequence[str] = (),
    lifetime_seconds: int = 3600,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """An access token for ``sub``, signed with the newest key."""
    kid, private = keys.signing()
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "name": name or sub,
        "role": role,
        "clinics": list(clinics),
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_seconds,
        "jti": uuid.uuid4().hex,
        **(extra or {}),
    }
    return jwt.encode(claims, private, algorithm=algorithm_of(private), headers={"kid": kid})


def app(keys: Keys, issuer: str) -> FastAPI:
    """The issuer's HTTP face: discovery and keys (read from the file on each request, so a
    rotation shows at once)."""
    web = FastAPI(title="Packline local issuer", docs_url=None, redoc_url=None, openapi_url=None)
    base = issuer.rstrip("/")

    @web.get("/.well-known/openid-configuration")
    async def configuration() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "jwks_uri": f"{base}/jwks.json",
            "id_token_signing_alg_values_supported": [ALGORITHM, RSA_ALGORITHM],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    @web.get("/jwks.json")
    async def jwks() -> dict[str, Any]:
        return keys.jwks()

    return web


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="packline-issuer",
        description="A local OpenID Connect issuer for development and tests: mints staff "
        "access tokens from a local key and serves its JWKS.",
    )
    parser.add_argument(
        "--key-file",
        default=os.environ.get("PACKLINE_ISSUER_KEY_FILE", DEFAULT_KEY_FILE),
        help="the signing keys (created if missing); PACKLINE_ISSUER_KEY_FILE",
    )
    parser.add_argument(
        "--issuer",
        default=os.environ.get("PACKLINE_OIDC_ISSUER", DEFAULT_ISSUER),
        help="the issuer URL, also where it serves (PACKLINE_OIDC_ISSUER)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the discovery document and the JWKS")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, help="default: the issuer URL's port")
    token = commands.add_parser("mint", help="print an access token")
    token.add_argument("--sub", required=True, help="the staff id")
    token.add_argument("--name")
    token.add_argument(
        "--role",
        required=True,
        choices=["reception", "billing", "practitioner", "admin", "operations"],
    )
    token.add_argument("--clinic", action="append", default=[], help="a location id (repeat)")
    token.add_argument(
        "--audience", default=os.environ.get("PACKLINE_OIDC_AUDIENCE", DEFAULT_AUDIENCE)
    )
    token.add_argument("--minutes", type=int, default=60, help="lifetime (60)")
    rotate = commands.add_parser("rotate", help="add a new signing key")
    rotate.add_argument("--drop-old", action="store_true", help="and stop publishing the old")
    args = parser.parse_args(argv)
    keys = Keys(Path(args.key_file))
    if args.command == "mint":
        print(
            mint(
                keys,
                issuer=args.issuer,
                audience=args.audience,
                sub=args.sub,
                name=args.name,
                role=args.role,
                clinics=args.clinic,
                lifetime_seconds=args.minutes * 60,
            )
        )
    elif args.command == "rotate":
        print(keys.rotate(drop_old=args.drop_old))
    else:
        from urllib.parse import urlsplit

        from packline_core.http_server import HttpServerSettings
        from packline_core.http_server import serve as serve_http
        from packline_core.settings import load_settings

        port = args.port or urlsplit(args.issuer).port or 80
        limits = load_settings(HttpServerSettings)
        print(f"packline-issuer: {args.issuer} (keys: {args.key_file})", file=sys.stderr)
        serve_http(app(keys, args.issuer), limits, host=args.host, port=port, access_log=False)


if __name__ == "__main__":
    main()
