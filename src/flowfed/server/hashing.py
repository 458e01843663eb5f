"""What the database keeps of a secret (API tokens, client secrets, node tokens).

Its own module so that both user tokens (:mod:`flowfed.server.auth`) and OAuth2 clients
(:mod:`flowfed.server.oauth`) use it without importing each other.

Example:
    >>> hash_secret("s3cret")[:12]
    '1ec1c26b50d5'
"""

from __future__ import annotations

import hashlib


def hash_secret(secret: str) -> str:
    """What the database keeps of a token or client secret: its SHA-256 (hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()
