"""Encryption at rest for the epoch log: AES-GCM record bodies bound to their place.

Each record body is sealed as ``nonce (12 bytes) | ciphertext | tag`` with associated data
``lineage | segment u32 | offset u64 | kind u8``, so a record swapped with another, moved,
or replayed from an older file fails to open even with the right key. The record checksums
cover the sealed bytes, so torn tails are found without the key. Keys are 16, 24 or 32 bytes.

AES-GCM comes from ``cryptography``, the optional ``encryption`` extra: it is imported only
when a key is given, so that a plain or in-memory store runs without it, and its absence is a
StoreError that names the extra.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..core.errors import StoreError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .records import SegmentHeader

NONCE = 12

MISSING = (
    "key= needs watchstore's 'encryption' extra (AES-GCM from cryptography, which is not "
    'installed): pip install "watchstore[encryption]"'
)


class SealError(Exception):
    """A sealed body does not open with this key at this place."""


class Sealer:
    """Seals and opens record bodies with one AES-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("an encryption key is 16, 24 or 32 bytes (AES-128/192/256)")
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise StoreError(MISSING) from None
        self._aead: AESGCM = AESGCM(key)
        self._invalid: type[Exception] = InvalidTag

    @staticmethod
    def _aad(header: SegmentHeader, offset: int, kind: int) -> bytes:
        return (
            header.lineage
            + header.segment.to_bytes(4, "little")
            + offset.to_bytes(8, "little")
            + bytes((kind,))
        )

    def seal(self, header: SegmentHeader, offset: int, kind: int, body: bytes) -> bytes:
        """The sealed form of ``body`` for a record of ``kind`` at ``offset``."""
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, body, self._aad(header, offset, kind))

    def open(self, header: SegmentHeader, offset: int, kind: int, sealed: bytes) -> bytes:
        """The plain body, or SealError (wrong key, or a record not written here)."""
        try:
            return self._aead.decrypt(
                sealed[:NONCE], sealed[NONCE:], self._aad(header, offset, kind)
            )
        except (self._invalid, ValueError):
            raise SealError("record does not open with this key at this place") from None
