#!/usr/bin/env python3
"""Prints an HS256 service JWT for the benchmark (standard library only).

usage: mint_jwt.py SECRET ISSUER AUDIENCE "SCOPES" [LIFETIME_SECONDS]
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    secret, issuer, audience, scopes = sys.argv[1:5]
    lifetime = int(sys.argv[5]) if len(sys.argv) > 5 else 3600
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": "bench-service@clients",
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime,
        "scope": scopes,
    }
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    print(signing_input + "." + b64url(signature))


if __name__ == "__main__":
    main()
