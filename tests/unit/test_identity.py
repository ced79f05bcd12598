"""Staff identity: access tokens verified against the issuer's JWKS (the local issuer's, served
in-process), static tokens as an explicit option, and who an action is recorded under."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, HTTPException, Request
from packline_calendar.settings import CalendarSettings
from packline_core import issuer
from packline_core.auth import acting, caller, may, needs, protect, register_whoami
from packline_core.identity import Staff, TokenRefused, TokenVerifier

ISSUER = "http://issuer.test"
AUDIENCE = "packline"
STATIC, OTHER = secrets.token_hex(32), secrets.token_hex(32)  # static tokens: long and random


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> issuer.Keys:
    return issuer.Keys(tmp_path / "keys.json")


def verifier(keys: issuer.Keys, clock: Clock | None = None, **options: Any) -> TokenVerifier:
    """A verifier that discovers the JWKS from the issuer's openid-configuration."""
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        transport=httpx.ASGITransport(app=issuer.app(keys, ISSUER)),
        clock=clock or Clock(),
        **options,
    )


def token(keys: issuer.Keys, **claims: Any) -> str:
    options: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "sub": "sam",
        "name": "Sam Lee",
        "role": "reception",
        "clinics": ["northside"],
        **claims,
    }
    return issuer.mint(keys, **options)


async def test_a_good_token_names_the_staff_member(keys: issuer.Keys) -> None:
    staff = await verifier(keys).verify(token(keys, clinics=["northside", "southside"]))
    assert staff == Staff(
        sub="sam", name="Sam Lee", role="reception", clinics=("northside", "southside")
    )


async def test_an_expired_token_is_refused_after_the_leeway(keys: issuer.Keys) -> None:
    check = verifier(keys, leeway_seconds=30)
    an_hour_ago = time.time() - 3600
    just_expired = token(keys, now=an_hour_ago - 10, lifetime_seconds=3600)  # 10 s ago
    long_expired = token(keys, now=an_hour_ago - 120, lifetime_seconds=3600)  # 2 min ago
    assert (await check.verify(just_expired)).sub == "sam"  # within the clock skew
    with pytest.raises(TokenRefused, match="expired") as refused:
        await check.verify(long_expired)
    assert refused.value.status == 401


async def test_a_wrong_signature_is_refused(keys: issuer.Keys, tmp_path: Path) -> None:
    kid, _ = keys.signing()
    _, other_key = issuer.Keys(tmp_path / "other.json").signing()
    claims = jwt.decode(token(keys), options={"verify_signature": False})
    forged = jwt.encode(claims, other_key, algorithm="ES256", headers={"kid": kid})
    with pytest.raises(TokenRefused, match="signature"):
        await verifier(keys).verify(forged)
    tampered = token(keys).split(".")
    tampered[1] = jwt.utils.base64url_encode(b'{"sub":"admin"}').decode()
    with pytest.raises(TokenRefused):
        await verifier(keys).verify(".".join(tampered))


async def test_no_algorithm_none_and_no_shared_secret(keys: issuer.Keys) -> None:
    claims = jwt.decode(token(keys), options={"verify_signature": False})
    unsigned = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(TokenRefused, match="algorithm"):
        await verifier(keys).verify(unsigned)
    hmac = jwt.encode(claims, "x" * 32, algorithm="HS256", headers={"kid": keys.signing()[0]})
    with pytest.raises(TokenRefused, match="algorithm"):
        await verifier(keys).verify(hmac)


async def test_another_audience_or_issuer_is_refused(keys: issuer.Keys) -> None:
    with pytest.raises(TokenRefused, match="audience"):
        await verifier(keys).verify(token(keys, audience="another-app"))
    with pytest.raises(TokenRefused, match="issuer"):
        await verifier(keys).verify(token(keys, issuer="http://elsewhere.test"))


async def test_a_token_without_a_packline_role_is_forbidden(keys: issuer.Keys) -> None:
    with pytest.raises(TokenRefused) as refused:
        await verifier(keys).verify(token(keys, role="janitor"))
    assert refused.value.status == 403
    # A list of roles (Keycloak's realm roles mapped to a claim): the first Packline one.
    staff = await verifier(keys).verify(token(keys, extra={"role": ["offline", "billing"]}))
    assert staff.role == "billing"


async def test_key_rotation_is_picked_up_without_a_restart(keys: issuer.Keys) -> None:
    clock = Clock()
    check = verifier(keys, clock, refetch_seconds=10, cache_seconds=300)
    assert (await check.verify(token(keys))).sub == "sam"
    old_token = token(keys)
    keys.rotate()  # a new signing key; the old one still published
    clock.now += 11
    assert (await check.verify(token(keys, sub="alex"))).sub == "alex"  # one refetch
    assert (await check.verify(old_token)).sub == "sam"
    # The issuer drops the old key: once the cache is stale, tokens it signed are refused.
    keys.rotate(drop_old=True)
    clock.now += 301
    with pytest.raises(TokenRefused, match="does not publish"):
        await check.verify(old_token)


async def test_an_unknown_key_does_not_refetch_on_every_request(keys: issuer.Keys) -> None:
    clock = Clock()
    fetches: list[str] = []
    inner = httpx.ASGITransport(app=issuer.app(keys, ISSUER))

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            fetches.append(request.url.path)
            return await inner.handle_async_request(request)

    check = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=f"{ISSUER}/jwks.json",
        transport=Counting(),
        clock=clock,
        refetch_seconds=10,
    )
    await check.verify(token(keys))
    keys.rotate()
    for _ in range(5):  # within the refetch interval: the cache is not refreshed
        with pytest.raises(TokenRefused, match="does not publish"):
            await check.verify(token(keys))
    assert fetches == ["/jwks.json"]


def settings(**values: Any) -> CalendarSettings:
    values = {"staff_api_open": False, **values}
    return CalendarSettings(database_url="postgresql://x@127.0.0.1/x", http_port=0, **values)


def app_with(values: dict[str, Any]) -> FastAPI:
    app = FastAPI()
    configured = settings(**values)
    protect(app, configured)
    register_whoami(app)

    @app.get("/unlink", dependencies=[needs("unlink")])
    async def unlink(request: Request) -> dict[str, Any]:
        return {"by": acting(caller(request), None, ["query", "unassigned_by"])}

    return app


async def ask(app: FastAPI, path: str, bearer: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path, headers=headers)


async def test_a_static_token_is_its_fixed_identity_only_when_configured(
    keys: issuer.Keys,
) -> None:
    static = app_with({"staff_tokens": STATIC})
    who = (await ask(static, "/whoami", STATIC)).json()
    assert who["authenticated"] and who["sub"] == "static-token" and who["role"] == "service"
    assert who["source"] == "static" and who["clinics"] is None
    assert (await ask(static, "/unlink", STATIC)).json() == {"by": "static-token"}
    assert (await ask(static, "/whoami", "guess")).status_code == 403
    named = app_with({"staff_tokens": OTHER, "staff_token_subject": "online-bookings"})
    assert (await ask(named, "/whoami", OTHER)).json()["sub"] == "online-bookings"
    # With an issuer and no static tokens, the same string is just a token that does not verify.
    oidc_only = app_with(
        {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": f"{ISSUER}/jwks"}
    )
    refused = await ask(oidc_only, "/whoami", STATIC)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]
    # Nothing configured (and explicitly opened): no caller at all.
    open_api = FastAPI()
    protect(open_api, settings(staff_api_open=True))
    register_whoami(open_api)
    assert (await ask(open_api, "/whoami", None)).json()["authenticated"] is False


def test_roles_allow_their_jobs_only() -> None:
    def staff(role: str) -> Staff:
        return Staff(sub="x", name="x", role=role, clinics=())

    assert may(staff("reception"), "book") and may(staff("reception"), "unlink")
    assert not may(staff("billing"), "unlink") and may(staff("billing"), "sell")
    assert not may(staff("reception"), "sell") and not may(staff("practitioner"), "book")
    assert may(staff("operations"), "operations") and not may(staff("operations"), "book")
    assert may(staff("admin"), "catalogue") and not may(staff("admin"), "read invoices")
    assert all(may(staff("service"), p) for p in ("book", "sell", "operations", "catalogue"))
    assert may(None, "book")  # the API is open: no caller to refuse
    with pytest.raises(ValueError):
        needs("fly")


def test_who_acted_is_the_verified_caller_never_the_request() -> None:
    sam = Staff(sub="sam", name="Sam Lee", role="reception", clinics=("northside",))
    assert acting(sam, None, ["body", "booked_by"]) == "sam"
    assert acting(sam, "sam", ["body", "booked_by"]) == "sam"
    with pytest.raises(HTTPException) as refused:
        acting(sam, "maria", ["body", "booked_by"])
    assert refused.value.status_code == 422
    detail: Any = refused.value.detail
    assert detail[0]["loc"] == ["body", "booked_by"]
    assert acting(None, "maria", ["body", "booked_by"]) == "maria"  # open API: as given
    assert acting(None, None, ["body", "booked_by"]) == "anonymous"
