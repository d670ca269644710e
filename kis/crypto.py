"""AES-256-CBC for KIS's encrypted WebSocket streams (our orders' notices).

The subscribe answer of an encrypted stream carries `output.key` (32 characters) and `output.iv`
(16 characters), used as their UTF-8 bytes; each data frame's payload is the base64 of the
AES-256-CBC ciphertext of the `^`-joined fields, PKCS7-padded.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kis.errors import KISError

BLOCK_BITS = 128


class DecryptError(KISError):
    """An encrypted payload that cannot be decrypted; the message says why (never the key)."""

    code = "kis_decrypt_failed"


def _cipher(key: str, iv: str) -> Cipher:
    key_bytes, iv_bytes = key.encode("utf-8"), iv.encode("utf-8")
    if len(key_bytes) != 32:
        raise DecryptError(f"AES-256 key is {len(key_bytes)} bytes, expected 32.")
    if len(iv_bytes) != 16:
        raise DecryptError(f"AES iv is {len(iv_bytes)} bytes, expected 16.")
    return Cipher(algorithms.AES(key_bytes), modes.CBC(iv_bytes))


def decrypt(payload: str, *, key: str, iv: str) -> str:
    """base64 AES-256-CBC (PKCS7) -> the UTF-8 plaintext."""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("encrypted payload is not valid base64.") from None
    if not data or len(data) % 16:
        raise DecryptError(
            f"encrypted payload is {len(data)} bytes, not a positive multiple of the "
            "16-byte AES block (truncated?)."
        )
    decryptor = _cipher(key, iv).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError(
            "encrypted payload has bad PKCS7 padding (wrong key / iv, or corrupted)."
        ) from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptError("decrypted payload is not UTF-8 text (wrong key / iv?).") from None


def encrypt(text: str, *, key: str, iv: str) -> str:
    """The inverse of decrypt() (the fake KIS server sends with it)."""
    padder = padding.PKCS7(BLOCK_BITS).padder()
    padded = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = _cipher(key, iv).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")
