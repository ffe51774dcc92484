"""Paged KV-cache blocks with prefix caching (plain Python, no torch).

Every physical block holds ``block_size`` tokens' K/V. A sequence's ``block_table`` maps its
logical blocks to physical ones. Prefix caching: once a FULL block's K/V is computed it is
published under a hash that chains over every token before it (so equal hashes mean equal
prefixes); a later sequence whose leading blocks hash the same shares those blocks (ref counts)
instead of recomputing them. Blocks whose ref count drops to 0 stay in the cache, on a free list
in LRU order, until a new allocation evicts them.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from hashlib import blake2b

from local_engine.engine.sequence import Sequence

__all__ = ["BlockManager"]

HASH_BYTES = 16
_ROOT_HASH = b""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def chain_hash(parent: bytes, token_ids: list[int]) -> bytes:
    """Hash of a full block given the hash of everything before it."""
    h = blake2b(parent, digest_size=HASH_BYTES)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


class _Block:
    __slots__ = ("block_id", "ref_count", "hash")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: bytes | None = None  # set while the block is published in the prefix cache


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # LRU first
        self._cached: dict[bytes, int] = {}  # block hash -> physical block id
        self.prefix_cache_queries = 0  # tokens looked up
        self.prefix_cache_hits = 0  # tokens found

    # accounting
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences (free cached blocks count as free)."""
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._blocks[block_id].ref_count

    # hashing
    def block_hash(self, seq: Sequence, i: int) -> bytes:
        """Chain hash of full block ``i`` of ``seq``, computed once and kept on the sequence."""
        hashes = seq.block_hashes
        while len(hashes) <= i:
            parent = hashes[-1] if hashes else _ROOT_HASH
            hashes.append(chain_hash(parent, seq.block(len(hashes))))
        return hashes[i]

    # prefix lookup (no side effects)
    def match_prefix(self, seq: Sequence) -> list[int]:
        """Physical blocks already holding ``seq``'s leading full blocks. At least one token is
        always left to compute, since the step that computes it yields the next-token logits."""
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        for i in range((seq.num_tokens - 1) // self.block_size):
            block_id = self._cached.get(self.block_hash(seq, i))
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, hits: list[int], num_tokens: int) -> bool:
        """Whether a new sequence can hold ``num_tokens`` tokens, sharing the ``hits`` blocks."""
        revived = sum(1 for b in hits if self._blocks[b].ref_count == 0)  # they leave the free list
        return _cdiv(num_tokens, self.block_size) - len(hits) + revived <= len(self._free)

    # allocation
    def allocate(self, seq: Sequence, hits: list[int], num_new_tokens: int) -> None:
        """Give a waiting ``seq`` its cached prefix blocks plus room for ``num_new_tokens``."""
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.request_id} already holds blocks")
        for block_id in hits:
            block = self._blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
        num_cached = len(hits) * self.block_size
        seq.num_computed_tokens = num_cached
        seq.num_published_blocks = len(hits)
        if seq.num_completion_tokens == 0:  # a resumed sequence keeps its first figure
            seq.num_cached_tokens = num_cached
        if self.enable_prefix_caching:
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += num_cached
        self.append_slots(seq, num_new_tokens)

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        needed = _cdiv(seq.num_computed_tokens + num_new_tokens, self.block_size)
        return needed - len(seq.block_table) <= len(self._free)

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> None:
        """Grow ``seq.block_table`` to cover its next ``num_new_tokens`` tokens."""
        needed = _cdiv(seq.num_computed_tokens + num_new_tokens, self.block_size)
        if needed - len(seq.block_table) > len(self._free):
            raise RuntimeError("out of KV blocks; check can_append first")
        while len(seq.block_table) < needed:
            seq.block_table.append(self._take_free_block())

    def _take_free_block(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self._blocks[block_id]
        if block.hash is not None:  # evict the least recently freed cached block
            del self._cached[block.hash]
            block.hash = None
        block.ref_count = 1
        return block_id

    def free(self, seq: Sequence) -> None:
        # tail blocks first, so they are evicted before the more shareable leading ones
        for block_id in reversed(seq.block_table):
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
        seq.block_table.clear()
        seq.num_published_blocks = 0

    # publishing
    def publish(self, seq: Sequence) -> None:
        """Offer ``seq``'s newly computed full blocks to the prefix cache (call after a step)."""
        num_full = seq.num_computed_tokens // self.block_size
        if not self.enable_prefix_caching:
            seq.num_published_blocks = num_full
            return
        for i in range(seq.num_published_blocks, num_full):
            h = self.block_hash(seq, i)
            if h not in self._cached:  # a twin computed in the same step keeps the first copy
                block_id = seq.block_table[i]
                self._cached[h] = block_id
                self._blocks[block_id].hash = h
        seq.num_published_blocks = num_full
