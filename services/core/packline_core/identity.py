"""Who is asking: the staff member behind an HTTP request, from a verified OpenID Connect access
token (or, as an explicit service-to-service / development option, a static bearer token).

An access token is a JWT signed by the issuer (Keycloak, Auth0, Entra ID, or the local
``packline-issuer``). It is accepted only when its signature checks against a key of the
issuer's JWKS, its ``iss`` is the configured issuer, its ``aud`` holds the configured audience and
it has not expired (``exp``, ``nbf`` and ``iat`` with a small clock-skew leeway). The JWKS is
fetched from ``PACKLINE_OIDC_JWKS_URL``, or from the ``jwks_uri`` of the issuer's
``/.well-known/openid-configuration``, and cached; a token signed by a key the cache lacks
(the issuer rotated its keys) makes the verifier fetch the JWKS again, at most once every
``refetch_seconds``, so rotation needs no restart. See docs/identity.md.

The claims Packline reads: ``sub`` (the staff member's id, which every audit field records),
``name``, ``role`` (one of :data:`ROLES`) and ``clinics`` (the location ids they work for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

# The roles a token may carry. "service" is the identity of a static token (service to service,
# development): it may do everything, like the token of yesterday.
Role = Literal["reception", "billing", "practitioner", "admin", "operations", "service"]
ROLES: tuple[str, ...] = ("reception", "billing", "practitioner", "admin", "operations", "service")

# Which practitioner a "practitioner" token is (their own calendar); without it, the token's sub.
PRACTITIONER_CLAIM = "practitioner_id"

# Asymmetric algorithms only: never "none", never a shared secret (HS*) an attacker could guess
# from a public key.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


@dataclass(frozen=True)
class Staff:
    """A verified caller. ``clinics`` None: every clinic (a static token)."""

    sub: str
    name: str
    role: str
    clinics: tuple[str, ...] | None = None
    source: Literal["oidc", "static"] = "oidc"
    # A practitioner's own calendar: the practitioner id they are (claim "practitioner_id",
    # else their "sub"); None for every other role.
    practitioner_id: str | None = None

    def shown(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "name": self.name,
            "role": self.role,
            "clinics": list(self.clinics) if self.clinics is not None else None,
            "source": self.source,
            "practitioner_id": self.practitioner_id,
        }


class TokenRefused(Exception):
    """The token is not good: 401 (``status``) with the reason, or 403 for a good token that
    carries no Packline role."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


Fetch = Callable[[str], Any]  # an async function: URL -> parsed JSON


@dataclass
class Claims:
    """Which claims hold the name, the role and the clinics (providers differ: see
    docs/identity.md)."""

    name: str = "name"
    role: str = "role"
    clinics: str = "clinics"


@dataclass
class TokenVerifier:
    """Verifies access tokens of one issuer for one audience."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    leeway_seconds: float = 30.0
    cache_seconds: float = 300.0
    refetch_seconds: float = 10.0
    claims: Claims = field(default_factory=Claims)
    clock: Callable[[], float] = time.monotonic
    transport: httpx.AsyncBaseTransport | None = None
    _keys: dict[str, PyJWK] = field(default_factory=dict, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def verify(self, token: str) -> Staff:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise TokenRefused(f"not a JWT: {error}") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise TokenRefused(f"token algorithm {algorithm!r} is not accepted")
        key = await self.key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(f"token is not for this audience ({self.audience})") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused(f"token is not from issuer {self.issuer}") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("token signature does not verify") from None
        except jwt.InvalidTokenError as error:
            raise TokenRefused(f"token refused: {error}") from None
        return self.staff(claims)

    def staff(self, claims: Mapping[str, Any]) -> Staff:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 128 or "\n" in sub:
            raise TokenRefused("token 'sub' is not a staff id")
        role = _role(claims.get(self.claims.role))
        if role is None:
            raise TokenRefused(
                f"token carries no Packline role in '{self.claims.role}' "
                f"(one of {', '.join(r for r in ROLES if r != 'service')})",
                status=403,
            )
        name = claims.get(self.claims.name)
        clinics = claims.get(self.claims.clinics) or []
        if isinstance(clinics, str):
            clinics = [clinics]
        if not isinstance(clinics, list) or not all(isinstance(c, str) for c in clinics):
            raise TokenRefused(f"token '{self.claims.clinics}' is not a list of location ids")
        practitioner = claims.get(PRACTITIONER_CLAIM, sub) if role == "practitioner" else None
        if practitioner is not None and (not isinstance(practitioner, str) or not practitioner):
            raise TokenRefused(f"token '{PRACTITIONER_CLAIM}' is not a practitioner id")
        return Staff(
            sub=sub,
            name=name if isinstance(name, str) and name else sub,
            role=role,
            clinics=tuple(clinics),
            practitioner_id=practitioner,
        )

    async def key(self, kid: str | None) -> PyJWK:
        """The issuer's key ``kid``: from the cache while it is fresh; a key the cache lacks
        fetches the JWKS once more (the issuer may have rotated), not more often than
        ``refetch_seconds``."""
        async with self._lock:
            now = self.clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.cache_seconds
            unknown = (kid not in self._keys) if kid else not self._keys
            may_refetch = self._fetched_at is None or now - self._fetched_at >= self.refetch_seconds
            if stale or (unknown and may_refetch):
                await self._refresh()
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise TokenRefused("token names no key ('kid') and the issuer has several")
        if kid not in self._keys:
            raise TokenRefused(f"token signed by key {kid!r}, which the issuer does not publish")
        return self._keys[kid]

    async def _refresh(self) -> None:
        try:
            url = self.jwks_url or await self._discover()
            document = await self._get(url)
            keys = PyJWKSet.from_dict(document).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError, KeyError) as error:
            if self._keys:  # keep the keys we had: the issuer may be back soon
                self._fetched_at = self.clock()
                return
            raise TokenRefused(f"cannot fetch the issuer's keys: {type(error).__name__}") from None
        self._keys = {k.key_id or "": k for k in keys}
        self._fetched_at = self.clock()

    async def _discover(self) -> str:
        config = await self._get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        url = config["jwks_uri"]
        if not isinstance(url, str):
            raise ValueError("openid-configuration has no jwks_uri")
        self.jwks_url = url
        return url

    async def _get(self, url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self.transport, timeout=5) as client:
            answer = await client.get(url)
            answer.raise_for_status()
            body = answer.json()
        if not isinstance(body, dict):
            raise ValueError(f"{url} answered no JSON object")
        return body


def _role(value: object) -> str | None:
    """The Packline role in a claim: a string, or the first known role of a list (providers
    that give several roles, e.g. Keycloak's realm roles mapped to a claim)."""
    candidates: Sequence[object] = value if isinstance(value, list) else [value]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate in ROLES and candidate != "service":
            return candidate
    return None
