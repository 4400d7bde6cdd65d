"""TEST-ONLY: checks an Alibaba Cloud ``ACS3-HMAC-SHA256`` request signature as the services do.

The signature is recomputed from the request as it arrived (method, path, query, the headers the
client says it signed, the body's sha256) with the secret of the access key it names, and
compared; the date must be recent and the nonce unused. Used by the fake control planes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from calendar import timegm
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

ALGORITHM = "ACS3-HMAC-SHA256"
MAX_SKEW = 15 * 60
_AUTHORIZATION = re.compile(
    rf"^{ALGORITHM} Credential=(?P<key>[^,]+),SignedHeaders=(?P<headers>[^,]+),"
    r"Signature=(?P<signature>[0-9a-f]{64})$")
#: What the services require to be signed.
REQUIRED = ("host", "x-acs-action", "x-acs-content-sha256", "x-acs-date",
            "x-acs-signature-nonce", "x-acs-version")


@dataclass
class Rejection:
    """Why a request was refused: the HTTP status and the service's error code and message."""

    status: int
    code: str
    message: str


class SignatureVerifier:
    """Verifies requests signed with one of ``keys`` (access key id -> secret)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        self.verified = 0  # how many requests passed: the tests check the fakes saw signatures

    def check(self, method: str, raw_path: str, headers: Mapping[str, list[str]],
              body: bytes) -> Rejection | None:
        """None if the request is properly signed; else why not. ``headers``: lower-cased name ->
        every value it was sent with."""
        one = {name: values[0] for name, values in headers.items() if values}
        match = _AUTHORIZATION.match(one.get("authorization", ""))
        if not match:
            return Rejection(400, "MissingAuthorization", "no ACS3-HMAC-SHA256 Authorization header")
        secret = self.keys.get(match["key"])
        if secret is None:
            return Rejection(403, "InvalidAccessKeyId.NotFound",
                             f"the access key id {match['key']} does not exist")
        signed = match["headers"].split(";")
        missing = [h for h in REQUIRED if h not in signed]
        if missing or signed != sorted(signed):
            return Rejection(400, "IncompleteSignature", f"headers not signed: {missing}")
        if one.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            return Rejection(400, "ContentSHA256NotMatch", "x-acs-content-sha256 is not the "
                             "body's sha256")
        try:
            date = timegm(time.strptime(one["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return Rejection(400, "InvalidTimeStamp.Format", "x-acs-date is not ISO 8601 UTC")
        if abs(time.time() - date) > MAX_SKEW:
            return Rejection(400, "InvalidTimeStamp.Expired", "x-acs-date is too far from now")
        path, _, query = raw_path.partition("?")
        canonical = "\n".join([
            method, path, canonical_query(query),
            "".join(f"{h}:{','.join(sorted(v.strip() for v in headers.get(h, [])))}\n"
                    for h in signed),
            ";".join(signed), one["x-acs-content-sha256"]])
        to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match["signature"]):
            return Rejection(403, "SignatureNotMatch", "The request signature we calculated does "
                             "not match the signature you provided. Check your access key and "
                             "signing method")
        with self._lock:
            nonce = one["x-acs-signature-nonce"]
            if nonce in self._nonces:
                return Rejection(400, "SignatureNonceUsed", "the signature nonce was used before")
            self._nonces.add(nonce)
            self.verified += 1
        return None


def canonical_query(query: str) -> str:
    """Keys sorted, each value percent-encoded (only ``~`` kept), as the SDK signs them."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{k}={quote(v, safe='~')}" for k, v in pairs)
