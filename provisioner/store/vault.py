"""Secrets at rest: Fernet encryption with a key kept outside the database.

The key comes from ``PROVISIONER_SECRET_KEY`` (a Fernet key), or from the file named by
``PROVISIONER_SECRET_KEY_FILE``, or from ``$PROVISIONER_HOME/secret.key``, which is created
(mode 0600) on first use. Losing the key loses every stored secret: back it up apart from
the database.
"""

from __future__ import annotations

import base64
import os
import secrets
import string
import zlib
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from provisioner.errors import SecretKeyError
from provisioner.settings import Settings

# What each secret name is and how a new one is generated.
_ALNUM = string.ascii_letters + string.digits


def generate(name: str) -> str:
    """A fresh secret for ``name``: at least 128 bits, except where a device format says less."""
    if name == "ploam_password":
        # G.984.3 PLOAM passwords are exactly 10 characters: 59.5 bits is all the format holds.
        return "".join(secrets.choice(_ALNUM) for _ in range(10))
    # 22 characters of 62 symbols: 131 bits; letters and digits only, so every device
    # format (INI, CLI quoting, SNMP keys) takes it as it is.
    return "".join(secrets.choice(_ALNUM) for _ in range(22))


class Vault:
    """Encrypts and decrypts secret values; never logs or prints them."""

    def __init__(self, settings: Settings):
        key = self._load_key(settings)
        self._fernet = Fernet(key)
        # Published files are sealed with AES-GCM under a key derived from the same secret:
        # no base64, so a hundred thousand devices' files fit in memory and load fast.
        self._aead = AESGCM(
            HKDF(
                algorithm=SHA256(), length=32, salt=None, info=b"provisioner published files"
            ).derive(base64.urlsafe_b64decode(key))
        )

    @staticmethod
    def _load_key(settings: Settings) -> bytes:
        if settings.secret_key:
            key = settings.secret_key.encode()
            source = "PROVISIONER_SECRET_KEY"
        else:
            path = (
                Path(settings.secret_key_file)
                if settings.secret_key_file
                else settings.data_dir / "secret.key"
            )
            source = str(path)
            if not path.exists():
                if settings.secret_key_file:
                    raise SecretKeyError(f"{path}: secret key file does not exist")
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key())
            try:
                key = path.read_bytes().strip()
            except OSError as exc:
                raise SecretKeyError(f"{path}: cannot read secret key: {exc.strerror}") from None
        try:
            Fernet(key)
        except ValueError:
            raise SecretKeyError(f"{source}: not a valid key (32 url-safe base64 bytes)") from None
        return key

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret does not decrypt with this key (wrong PROVISIONER_SECRET_KEY?)"
            ) from None

    def seal(self, data: bytes) -> bytes:
        """``data`` compressed and encrypted (AES-GCM, a fresh 96-bit nonce first)."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, zlib.compress(data, 6), None)

    def unseal(self, sealed: bytes) -> bytes:
        try:
            return zlib.decompress(self._aead.decrypt(sealed[:12], sealed[12:], None))
        except (InvalidTag, zlib.error):
            raise SecretKeyError(
                "a published file does not decrypt with this key (wrong PROVISIONER_SECRET_KEY?)"
            ) from None
