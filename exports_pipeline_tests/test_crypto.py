"""SecretBox must interoperate with Langfuse's Node implementation byte for byte and never leak."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from exports_pipeline.crypto import (
    DecryptionError,
    EncryptionKeyError,
    Secret,
    SecretBox,
    generate_key,
    is_encrypted_format,
)

KEY = "6f1d0c3a5b2e4d7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
PLAINTEXT = "sk-lf-very-secret-ünïcødé-✓"

# Langfuse's packages/shared/src/encryption/encryption.ts, verbatim in behaviour.
NODE_LANGFUSE = r"""
const crypto = require("crypto");
const [op, keyHex, payload] = process.argv.slice(1);
const key = Buffer.from(keyHex, "hex");
if (op === "encrypt") {
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv("aes-256-gcm", key, iv);
  let encrypted = cipher.update(payload, "utf8", "hex");
  encrypted += cipher.final("hex");
  const tag = cipher.getAuthTag();
  process.stdout.write(`${iv.toString("hex")}:${encrypted}:${tag.toString("hex")}`);
} else {
  const [ivHex, encrypted, tagHex] = payload.split(":");
  if (!ivHex || !encrypted || !tagHex) throw new Error("Invalid or corrupted cipher format");
  const decipher = crypto.createDecipheriv("aes-256-gcm", key, Buffer.from(ivHex, "hex"));
  decipher.setAuthTag(Buffer.from(tagHex, "hex"));
  let decrypted = decipher.update(encrypted, "hex", "utf8");
  decrypted += decipher.final("utf8");
  process.stdout.write(decrypted);
}
"""


def _node(op: str, key: str, payload: str) -> str:
    node = shutil.which("node")
    assert node, "node must be on PATH for the Langfuse interoperability test"
    out = subprocess.run([node, "-e", NODE_LANGFUSE, op, key, payload], capture_output=True, check=True)
    return out.stdout.decode("utf-8")


def _hazmat_encrypt(key_hex: str, iv: bytes, plaintext: str) -> str:
    enc = Cipher(algorithms.AES(bytes.fromhex(key_hex)), modes.GCM(iv)).encryptor()
    cipher = enc.update(plaintext.encode("utf-8")) + enc.finalize()
    return f"{iv.hex()}:{cipher.hex()}:{enc.tag.hex()}"


def _hazmat_decrypt(key_hex: str, stored: str) -> str:
    iv_hex, cipher_hex, tag_hex = stored.split(":")
    dec = Cipher(
        algorithms.AES(bytes.fromhex(key_hex)), modes.GCM(bytes.fromhex(iv_hex), bytes.fromhex(tag_hex))
    ).decryptor()
    return (dec.update(bytes.fromhex(cipher_hex)) + dec.finalize()).decode("utf-8")


def test_round_trip_and_layout():
    box = SecretBox(KEY)
    stored = box.encrypt(PLAINTEXT)
    iv_hex, cipher_hex, tag_hex = stored.split(":")
    assert len(iv_hex) == 24 and len(tag_hex) == 32
    assert len(cipher_hex) == 2 * len(PLAINTEXT.encode("utf-8"))
    assert stored == stored.lower()
    assert box.decrypt(stored) == PLAINTEXT
    assert box.encrypt(PLAINTEXT) != stored, "a fresh random IV per encryption"
    assert is_encrypted_format(stored)
    assert not is_encrypted_format(PLAINTEXT)


def test_empty_plaintext_round_trips():
    box = SecretBox(KEY)
    assert box.decrypt(box.encrypt("")) == ""


def test_known_vector_built_by_hand():
    iv = bytes(range(12))
    stored = _hazmat_encrypt(KEY, iv, PLAINTEXT)
    assert SecretBox(KEY).decrypt(stored) == PLAINTEXT
    assert _hazmat_decrypt(KEY, SecretBox(KEY).encrypt(PLAINTEXT)) == PLAINTEXT


def test_fixed_vector_is_stable():
    # Produced once by Node's crypto.createCipheriv('aes-256-gcm') with this key and IV 000102...0b.
    pinned = "000102030405060708090a0b:537ae257759ce4e1:ea3e46acdde622d1f708fced66ddb723"
    assert _hazmat_encrypt(KEY, bytes.fromhex("000102030405060708090a0b"), "phc_test") == pinned
    assert SecretBox(KEY).decrypt(pinned) == "phc_test"
    assert SecretBox(KEY).decrypt(pinned.upper()) == "phc_test"
    tampered_iv = "100102030405060708090a0b" + pinned[24:]
    with pytest.raises(DecryptionError):
        SecretBox(KEY).decrypt(tampered_iv)


def test_node_langfuse_encrypts_python_decrypts():
    stored = _node("encrypt", KEY, PLAINTEXT)
    assert is_encrypted_format(stored)
    assert SecretBox(KEY).decrypt(stored) == PLAINTEXT


def test_python_encrypts_node_langfuse_decrypts():
    stored = SecretBox(KEY).encrypt(PLAINTEXT)
    assert _node("decrypt", KEY, stored) == PLAINTEXT


def test_uppercase_hex_key_accepted():
    assert SecretBox(KEY.upper()).decrypt(SecretBox(KEY).encrypt("x")) == "x"


def test_generate_key():
    key = generate_key()
    assert len(key) == 64 and int(key, 16) >= 0
    assert generate_key() != key
    assert SecretBox(key).decrypt(SecretBox(key).encrypt("abc")) == "abc"


def test_from_env():
    assert SecretBox.from_env({"ENCRYPTION_KEY": KEY}).decrypt(SecretBox(KEY).encrypt("a")) == "a"
    with pytest.raises(EncryptionKeyError, match="ENCRYPTION_KEY is not set"):
        SecretBox.from_env({})


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key(key):
    with pytest.raises(EncryptionKeyError, match="ENCRYPTION_KEY is not set"):
        SecretBox(key)


@pytest.mark.parametrize(
    "key",
    [
        KEY[:-2],  # short
        KEY + "00",  # long
        "z" * 64,  # not hex
        KEY[:-1] + " ",  # whitespace
        "0x" + KEY[:-2],
    ],
)
def test_bad_key_is_rejected_without_echo(key):
    with pytest.raises(EncryptionKeyError) as err:
        SecretBox(key)
    assert "64 hex characters" in str(err.value)
    assert key.strip() not in str(err.value) and key.strip() not in repr(err.value)


def test_box_repr_and_pickle_do_not_leak_key():
    box = SecretBox(KEY)
    assert KEY not in repr(box) and KEY not in str(box)
    with pytest.raises(TypeError):
        pickle.dumps(box)


@pytest.mark.parametrize(
    "stored",
    [
        "plaintext-secret",
        "a:b",
        "a:b:c:d",
        "zz" * 12 + ":00:" + "00" * 16,  # non-hex iv
        "00" * 12 + ":0:" + "00" * 16,  # odd-length cipher
        "00" * 11 + ":00:" + "00" * 16,  # short iv
        "00" * 12 + ":00:" + "00" * 15,  # short tag
        "00" * 12 + ": 0:" + "00" * 16,  # whitespace inside
        "",
    ],
)
def test_malformed_stored_value(stored):
    with pytest.raises(DecryptionError, match="^Invalid or corrupted cipher format$"):
        SecretBox(KEY).decrypt(stored)


def _flip(hex_text: str, pos: int) -> str:
    flipped = format(int(hex_text[pos], 16) ^ 0x1, "x")
    return hex_text[:pos] + flipped + hex_text[pos + 1 :]


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampering_is_detected_and_not_echoed(part):
    box = SecretBox(KEY)
    stored = box.encrypt(PLAINTEXT)
    parts = stored.split(":")
    parts[part] = _flip(parts[part], 3)
    tampered = ":".join(parts)
    with pytest.raises(DecryptionError) as err:
        box.decrypt(tampered)
    for text in (str(err.value), repr(err.value)):
        assert "tampered" in text
        assert PLAINTEXT not in text and KEY not in text and tampered not in text
        assert parts[1] not in text


def test_wrong_key_is_detected_and_not_echoed():
    stored = SecretBox(KEY).encrypt(PLAINTEXT)
    other = generate_key()
    with pytest.raises(DecryptionError) as err:
        SecretBox(other).decrypt(stored)
    assert "ENCRYPTION_KEY" in str(err.value)
    for text in (str(err.value), repr(err.value)):
        assert PLAINTEXT not in text and KEY not in text and other not in text and stored not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_secret_is_masked_everywhere():
    secret = Secret(PLAINTEXT)
    assert secret.reveal() == PLAINTEXT
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", "%s" % secret,
                 "{}".format(secret), repr([secret]), repr({"k": secret})):
        assert PLAINTEXT not in text
        assert "**********" in text
    assert str(secret) == "**********"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert not Secret("") and Secret("x")


def test_secret_is_immutable_and_not_picklable():
    secret = Secret(PLAINTEXT)
    with pytest.raises(AttributeError):
        secret._value = "other"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        json.dumps({"k": secret})
    assert copy.deepcopy(secret) is secret


def test_decrypt_secret_and_encrypt_secret():
    box = SecretBox(KEY)
    secret = box.decrypt_secret(box.encrypt(Secret(PLAINTEXT)))
    assert isinstance(secret, Secret) and secret.reveal() == PLAINTEXT


def test_logging_a_secret_does_not_reveal_it(caplog):
    secret = SecretBox(KEY).decrypt_secret(SecretBox(KEY).encrypt(PLAINTEXT))
    logger = logging.getLogger("exports_pipeline.test_crypto")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.info("key is %s", secret)
        logger.info("key repr %r", secret)
        logger.info(f"key f-string {secret}")
        logger.info("args %s", {"api_key": secret})
    assert len(caplog.records) == 4
    assert PLAINTEXT not in caplog.text
    assert caplog.text.count("**********") == 4
    for record in caplog.records:
        assert PLAINTEXT not in record.getMessage()


def test_key_never_in_environment_error_when_env_has_garbage(monkeypatch):
    monkeypatch.setenv("ENCRYPTION_KEY", "not-a-key-" + "f" * 20)
    with pytest.raises(EncryptionKeyError) as err:
        SecretBox.from_env()
    assert os.environ["ENCRYPTION_KEY"] not in str(err.value)
