"""The prefix index: one chained hash per full block of prompt tokens.

Block i's hash covers block i's token ids and, through its parent, every token before
it, so two prompts share block i's hash exactly when they share all tokens up to the end
of block i. The chain starts from a root that mixes in:

- the cache namespace (model, layout version, mode, shared-A fingerprint), so blocks of
  another model or layout never match;
- the tenant salt, so requests under different API keys never share a block, even for
  identical prompts (a shared cache is otherwise a timing side channel);
- the adapter, only where the mode keys by adapter (non-shared, vLLM's behaviour). The
  shared modes leave it out: that is what lets a role read another role's prefix.

Only full blocks are hashed; a partial tail block is recomputed, as in vLLM.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType

BlockHash = NewType("BlockHash", bytes)
"""A distinct type from ``bytes`` so a block hash is never confused with a block's payload."""

_TOKEN_CODE = "I"  # unsigned 32-bit: vocabularies stay far below 2**32
if array(_TOKEN_CODE).itemsize != 4:
    raise ImportError("array('I') is not 32-bit on this platform")
# Hashes must not depend on the host's byte order: one Redis may serve several hosts.
_SWAP_BYTES = sys.byteorder == "big"


def _field(value: bytes) -> bytes:
    """Length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike."""
    return len(value).to_bytes(4, "little") + value


@dataclass(frozen=True, slots=True)
class PrefixHasher:
    """Chained block hashes for one cache namespace and block size."""

    block_size: int
    namespace: str

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError("block_size must be positive")

    def root(self, *, salt: str, adapter: str | None = None) -> BlockHash:
        """The parent of block 0: namespace, tenant salt and (non-shared only) the adapter."""
        digest = hashlib.sha256()
        for part in (self.namespace, salt, adapter if adapter is not None else ""):
            digest.update(_field(part.encode()))
        digest.update(b"\x01" if adapter is not None else b"\x00")
        return BlockHash(digest.digest())

    def block_hashes(
        self, token_ids: Sequence[int], *, salt: str, adapter: str | None = None
    ) -> list[BlockHash]:
        """Hashes of the full blocks of ``token_ids``, first block first."""
        parent = self.root(salt=salt, adapter=adapter)
        hashes: list[BlockHash] = []
        for start in range(0, len(token_ids) - self.block_size + 1, self.block_size):
            block = array(_TOKEN_CODE, token_ids[start : start + self.block_size])
            if _SWAP_BYTES:
                block.byteswap()
            parent = BlockHash(hashlib.sha256(parent + block.tobytes()).digest())
            hashes.append(parent)
        return hashes

    def num_full_blocks(self, num_tokens: int) -> int:
        return num_tokens // self.block_size

