"""Secrets at rest, byte-compatible with Langfuse (`packages/shared/src/encryption/encryption.ts`).

Langfuse stores AES-256-GCM ciphertexts as ``iv_hex:cipher_hex:tag_hex`` (12-byte IV, 16-byte tag, no AAD,
UTF-8 plaintext) under a 64-hex `ENCRYPTION_KEY`. Keeping that exact layout means integration rows copied
from a Langfuse database (and the same key) keep working here, and the reverse.

Nothing in this module ever puts a key, a plaintext or a stored value into an exception, a repr or a log
line: errors say what is wrong, never with what.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exports_pipeline.errors import DeploymentFault

IV_BYTES = 12
TAG_BYTES = 16
MASK = "**********"

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_STORED = re.compile(r"[0-9a-fA-F]{24}:(?:[0-9a-fA-F]{2})*:[0-9a-fA-F]{32}")


class EncryptionKeyError(ValueError):
    """The configured key is missing or not 32 bytes of hex."""


class DecryptionError(DeploymentFault, ValueError):
    """A stored value could not be decrypted (malformed, tampered, or encrypted under another key).

    The deployment's fault, not the customer's: the secret they gave worked, our key or our copy of it
    does not. So an export fails at once without disabling the integration, naming ENCRYPTION_KEY.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, setting="ENCRYPTION_KEY", code="DecryptionFailed")


class Secret:
    """A decrypted secret that stays masked wherever it is printed, formatted or logged.

    Only `reveal()` hands out the plaintext, so leaking it takes a deliberate call at the point of use
    (building an auth header), not an f-string or a `repr` in some error path far away.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds text only")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):
        # Pickling is how values escape into run storage, event logs and subprocess payloads.
        raise TypeError("Secret values cannot be pickled; pass the encrypted form instead")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:
        return self


def generate_key() -> str:
    """A fresh key in the format Langfuse expects (same as `openssl rand -hex 32`)."""
    return secrets.token_hex(32)


def is_encrypted_format(value: str) -> bool:
    """True when `value` has the stored layout; used to refuse plaintext where ciphertext belongs."""
    return isinstance(value, str) and _STORED.fullmatch(value) is not None


class SecretBox:
    """Encrypts and decrypts with one key; construct once per process from `ENCRYPTION_KEY`."""

    __slots__ = ("_aead",)

    def __init__(self, key: str | None) -> None:
        if not key:
            raise EncryptionKeyError(
                "ENCRYPTION_KEY is not set; generate one with `openssl rand -hex 32`"
            )
        if not isinstance(key, str) or _HEX_KEY.fullmatch(key) is None:
            raise EncryptionKeyError(
                "ENCRYPTION_KEY must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`"
            )
        self._aead = AESGCM(bytes.fromhex(key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretBox:
        env = os.environ if environ is None else environ
        return cls(env.get("ENCRYPTION_KEY"))

    def __repr__(self) -> str:
        return f"SecretBox(key={MASK})"

    def __reduce__(self):
        raise TypeError("SecretBox cannot be pickled")

    def encrypt(self, plaintext: str | Secret) -> str:
        text = plaintext.reveal() if isinstance(plaintext, Secret) else plaintext
        if not isinstance(text, str):
            raise TypeError("plaintext must be text")
        iv = os.urandom(IV_BYTES)
        sealed = self._aead.encrypt(iv, text.encode("utf-8"), None)
        cipher, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        return f"{iv.hex()}:{cipher.hex()}:{tag.hex()}"

    def decrypt(self, stored: str) -> str:
        iv, cipher, tag = _split(stored)
        try:
            plain = self._aead.decrypt(iv, cipher + tag, None)
        except InvalidTag:
            raise DecryptionError(
                "Decryption failed: the value was tampered with or encrypted under a different ENCRYPTION_KEY"
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("Decryption failed: plaintext is not valid UTF-8") from None

    def decrypt_secret(self, stored: str) -> Secret:
        return Secret(self.decrypt(stored))


def _split(stored: str) -> tuple[bytes, bytes, bytes]:
    """Parse the stored layout; any deviation is the one error Langfuse also raises."""
    if not isinstance(stored, str):
        raise DecryptionError("Invalid or corrupted cipher format")
    parts = stored.split(":")
    if len(parts) != 3:
        raise DecryptionError("Invalid or corrupted cipher format")
    try:
        iv, cipher, tag = (bytes.fromhex(p) if _is_hex(p) else None for p in parts)
    except ValueError:
        raise DecryptionError("Invalid or corrupted cipher format") from None
    if iv is None or cipher is None or tag is None or len(iv) != IV_BYTES or len(tag) != TAG_BYTES:
        raise DecryptionError("Invalid or corrupted cipher format")
    return iv, cipher, tag


def _is_hex(part: str) -> bool:
    # bytes.fromhex tolerates whitespace; the stored format does not.
    return len(part) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in part)
