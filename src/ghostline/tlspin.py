"""What `--tls-pin` names: the SHA-256 of a relay certificate's DER bytes, in lowercase
hex. One definition for the relay (which prints its pin at start) and the client
(which checks it); no pad or key code, so the relay may import it."""

from __future__ import annotations

import hashlib


def certificate_pin(der: bytes) -> str:
    """The pin of the DER-encoded certificate `der`."""
    return hashlib.sha256(der).hexdigest()
