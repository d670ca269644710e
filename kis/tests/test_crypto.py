"""kis.crypto: AES-256-CBC of KIS's encrypted streams."""

import base64

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kis.crypto import DecryptError, decrypt, encrypt

KEY, IV = "0123456789abcdef0123456789abcdef", "fedcba9876543210"


def _reference_encrypt(plain: bytes) -> str:
    """Independent of kis.crypto: PKCS7 by hand, then raw AES-256-CBC."""
    pad = 16 - len(plain) % 16
    data = plain + bytes([pad]) * pad
    enc = Cipher(algorithms.AES(KEY.encode()), modes.CBC(IV.encode())).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode()


@pytest.mark.parametrize("text", ["a^b^c", "x" * 16, "삼성전자^005930^" + "9" * 100])
def test_decrypts_what_kis_sends(text):
    assert decrypt(_reference_encrypt(text.encode()), key=KEY, iv=IV) == text
    assert decrypt(encrypt(text, key=KEY, iv=IV), key=KEY, iv=IV) == text


def test_bad_base64():
    with pytest.raises(DecryptError, match="not valid base64"):
        decrypt("not*base64!", key=KEY, iv=IV)


def test_truncated_ciphertext():
    good = base64.b64decode(_reference_encrypt(b"hello world, hello KIS"))
    with pytest.raises(DecryptError, match="not a positive multiple of the 16-byte"):
        decrypt(base64.b64encode(good[:-3]).decode(), key=KEY, iv=IV)


def test_wrong_key_gives_bad_padding_or_text():
    payload = _reference_encrypt(b"0000012345^005930^3^71200")
    with pytest.raises(DecryptError, match=r"bad PKCS7 padding|not UTF-8"):
        decrypt(payload, key="X" * 32, iv=IV)


def test_bad_padding_named():
    enc = Cipher(algorithms.AES(KEY.encode()), modes.CBC(IV.encode())).encryptor()
    raw = enc.update(b"A" * 15 + b"\x00") + enc.finalize()  # last byte 0: not PKCS7
    with pytest.raises(DecryptError, match="bad PKCS7 padding"):
        decrypt(base64.b64encode(raw).decode(), key=KEY, iv=IV)


@pytest.mark.parametrize(
    ("key", "iv", "error"), [("short", IV, "key is 5 bytes"), (KEY, "x", "iv is 1")]
)
def test_key_and_iv_sizes(key, iv, error):
    with pytest.raises(DecryptError, match=error):
        decrypt(_reference_encrypt(b"abc"), key=key, iv=iv)
