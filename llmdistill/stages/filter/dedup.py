"""Text fingerprints for the filter stage: exact hashes, MinHash-LSH near duplicates, and the
word n-gram overlap used for decontamination (three small pure functions, as in open-r1)."""

from __future__ import annotations

import hashlib
import os
import string
from itertools import chain
from typing import cast

# Punctuation becomes space (str.translate is C-fast; the filter normalizes every trace).
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—…"})


def normalize(text: str) -> str:
    """Lowercase words only: punctuation, spacing and case differences do not make text new."""
    return " ".join(text.lower().translate(_PUNCT).split())


# The same normalization on bytes, for ASCII text (most traces): bytes.translate is a table
# lookup in C, where str.translate goes through a dict per character.
# (punctuation and the separators str.split knows -> space; A-Z -> a-z)
_PUNCT_BYTES = bytes(32 if chr(i) in string.punctuation or 0x1C <= i <= 0x1F else i + 32 if 65 <= i <= 90 else i for i in range(256))


def exact_key(text: str) -> bytes:
    """A 16-byte hash of ``normalize(text)``."""
    if text.isascii():
        data = b" ".join(text.encode().translate(_PUNCT_BYTES).split())
    else:
        data = normalize(text).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


# Words of recent texts: the degenerate, near-dup and decontamination filters read the same
# question and rationale one after another (a chunk at a time), and splitting is most of their
# cost. Bounded by words held, so a chunk of very long traces only makes it miss.
_WORDS: dict[str, tuple[bytes, ...]] = {}
_WORDS_HELD = [0]
WORDS_CACHE = 1 << 20


def words(text: str) -> tuple[bytes, ...]:
    """``normalize(text).split()``, as UTF-8 bytes (ASCII text takes the bytes fast path), cached."""
    got = _WORDS.get(text)
    if got is None:
        got = tuple(text.encode().translate(_PUNCT_BYTES).split() if text.isascii() else normalize(text).encode().split())
        if _WORDS_HELD[0] + len(got) > WORDS_CACHE:
            _WORDS.clear()
            _WORDS_HELD[0] = 0
        _WORDS[text] = got
        _WORDS_HELD[0] += len(got)
    return got


def ngrams(ws: tuple[bytes, ...], n: int):
    """The word n-grams of ``ws`` in order, as tuples (zipped from shifted copies: no joins)."""
    return zip(*(ws[i:] for i in range(n)))


def build_ngram_index(texts: list[str], n: int) -> set[tuple[bytes, ...]]:
    index: set[tuple[bytes, ...]] = set()
    for t in texts:
        index.update(ngrams(words(t), n))
    return index


def shared_ngram(text: str, index: set[tuple[bytes, ...]], n: int) -> str | None:
    """The first word n-gram of ``text`` (in reading order) found in ``index``, or None."""
    ws = words(text)
    if index.isdisjoint(ngrams(ws, n)):  # the common case, decided in C
        return None
    return b" ".join(next(g for g in ngrams(ws, n) if g in index)).decode()


def shingles(text: str, k: int) -> list[str]:
    """The k-word shingles of the normalized text, as strings (what ``shingle_hashes`` hashes)."""
    ws = normalize(text).split()
    if len(ws) <= k:
        return [" ".join(ws)] if ws else [""]
    return [" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1)]


_POLY = 0x9E3779B97F4A7C15  # shingle hash: h = h * _POLY + word hash (mod 2^64), over the k words
_SHORT = 0xD6E8FEB86659FD93  # marks the one shingle of a text shorter than k words


def shingle_hashes(docs: list[tuple[bytes, ...]], k: int):
    """(flat uint64 hashes of every doc's k-word shingles, row offsets [len(docs) + 1]). A doc of
    fewer than k words is one shingle of all its words, as ``shingles`` makes it. Words are hashed
    by rensa and combined in numpy, so no shingle string is ever built."""
    import numpy as np
    from rensa import RMinHash

    lens = np.fromiter(map(len, docs), np.int64, len(docs))
    flat = np.fromiter(chain.from_iterable(RMinHash.hash_token_sets(docs)), np.uint64, int(lens.sum()))
    count = np.where(lens >= k, lens - k + 1, 1)
    offsets = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(count, out=offsets[1:])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])  # each doc's first word in flat
    out = np.empty(offsets[-1], np.uint64)
    with np.errstate(over="ignore"):
        if len(flat) >= k:
            comb = np.zeros(len(flat) - k + 1, np.uint64)  # the shingle starting at every word
            for j in range(k):
                comb = comb * np.uint64(_POLY) + flat[j : len(flat) - k + 1 + j]
            doc = np.repeat(np.arange(len(docs)), count)
            slot = np.flatnonzero(lens[doc] >= k)
            out[slot] = comb[starts[doc[slot]] + slot - offsets[doc[slot]]]
        for d in np.flatnonzero(lens < k).tolist():  # short docs: rare
            h = _SHORT
            for w in flat[starts[d] : starts[d] + lens[d]].tolist():
                h = (h * _POLY + w) & 0xFFFFFFFFFFFFFFFF
            out[offsets[d]] = h
        out ^= out >> np.uint64(31)  # a final mix before rensa's permutations
        out *= np.uint64(0xBF58476D1CE4E5B9)
        out ^= out >> np.uint64(29)
    return out, offsets.astype(np.uint64)


class NearDupIndex:
    """MinHash-LSH over the texts kept so far, fed in chunks: each text that nearly duplicates a
    kept one gets (that one's kept index, estimated Jaccard); the others are kept (indexed).

    A text's MinHash (rensa, a chunk at a time) is cut into bands; texts sharing a band are
    candidates, and the MinHash Jaccard estimate (equal values / ``num_perm``) confirms them
    against ``threshold``. The state is compact, for millions of texts: each kept text's band keys
    (64-bit hashes) in sorted arrays (a log-structured merge of runs), 12 bytes a band; its
    MinHash goes to ``spill`` (a file; read back only for a candidate) or, without one, to memory.
    """

    RUN_CAP = 1 << 22  # band keys per sorted run: runs merge up to this size, so merges stay small

    def __init__(self, threshold: float, shingle: int, num_perm: int, seed: int = 0, spill: str | None = None):
        import numpy as np

        self.threshold, self.shingle, self.num_perm, self.seed = threshold, shingle, num_perm, seed
        self.bands = _bands(threshold, num_perm)
        rng = np.random.default_rng(0x5EED)
        self.mult = rng.integers(1, 1 << 63, size=(self.bands, num_perm // self.bands), dtype=np.uint64) | np.uint64(1)
        self.band_salt = rng.integers(1, 1 << 63, size=self.bands, dtype=np.uint64)
        self.runs: list[tuple] = []  # (sorted band keys, kept index of each)
        self.kept = 0
        self.spill = open(spill, "w+b") if spill else None  # noqa: SIM115 -- held for the run; closed by close()
        self.in_memory: list = []

    def _keys(self, sigs):
        import numpy as np

        with np.errstate(over="ignore"):
            h = (sigs.reshape(len(sigs), self.bands, -1).astype(np.uint64) * self.mult).sum(axis=2, dtype=np.uint64) ^ self.band_salt
            h ^= h >> np.uint64(29)  # a final mix, so keys spread over the 64 bits
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(32)
        return h

    def _signature(self, j: int):
        import numpy as np

        if self.spill is None:
            return self.in_memory[j]
        size = 4 * self.num_perm
        return np.frombuffer(os.pread(self.spill.fileno(), size, j * size), dtype=np.uint32)

    def minhashes(self, docs: list[tuple[bytes, ...]]):
        """The MinHashes of texts given as their ``words``: uint32 [len(docs), num_perm]."""
        import numpy as np
        from rensa import RMinHash

        if not docs:
            return np.zeros((0, self.num_perm), np.uint32)
        hashes, offsets = shingle_hashes(docs, self.shingle)
        return np.asarray(
            RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, self.num_perm, self.seed).to_rows(), dtype=np.uint32
        )

    def check(self, sigs) -> list[tuple[int, float] | None]:
        """``sigs``: the chunk's ``minhashes``, in order."""
        import numpy as np

        if not len(sigs):
            return []
        keys = self._keys(sigs)  # [n, bands]
        flat = keys.ravel()
        # candidates among the texts kept before this chunk, per row of the chunk
        earlier: dict[int, set[int]] = {}
        order = np.argsort(flat)
        queries = flat[order]  # sorted: the searches walk each run in order (several times faster than random probes)
        for run_keys, run_ids in self.runs:
            lo = np.searchsorted(run_keys, queries)
            hit = np.flatnonzero(run_keys[np.minimum(lo, len(run_keys) - 1)] == queries)
            hi = np.searchsorted(run_keys, queries[hit], "right")
            for pos, start, end in zip(hit.tolist(), lo[hit].tolist(), hi.tolist()):
                earlier.setdefault(int(order[pos]) // self.bands, set()).update(run_ids[start:end].tolist())
        # rows of this chunk sharing a band key with another row of the chunk (equal neighbours once sorted)
        same = queries[1:] == queries[:-1]
        repeated = np.zeros(len(flat), dtype=bool)
        repeated[order[1:][same]] = True
        repeated[order[:-1][same]] = True
        shared = cast("np.ndarray", repeated.reshape(keys.shape).any(axis=1))  # an array: axis=1 of a 2-d array
        out: list[tuple[int, float] | None] = [None] * len(sigs)
        kept_here: dict[int, int] = {}  # band key -> kept index, for the chunk's own kept rows
        row_of: dict[int, int] = {}  # kept index -> its row in this chunk (rows kept_here points to)
        # only rows with a candidate (or sharing a key within the chunk) need a look; the rest are kept
        look = shared.copy()
        look[list(earlier)] = True
        rejected = 0  # rows of the chunk rejected so far: a kept row's index is self.kept + its row - rejected
        for i in np.flatnonzero(look).tolist():
            cands = earlier.get(i, set())
            if shared[i]:
                cands = cands | {kept_here[k] for k in keys[i].tolist() if k in kept_here}
            best = None
            for j in sorted(cands):
                other = sigs[row_of[j]] if j >= self.kept else self._signature(j)
                sim = int(np.count_nonzero(other == sigs[i])) / self.num_perm
                if best is None or sim > best[1]:
                    best = (j, sim)
            if best is not None and best[1] >= self.threshold:
                out[i] = best
                rejected += 1
            elif shared[i]:
                row_of[self.kept + i - rejected] = i
                for k in keys[i].tolist():
                    kept_here.setdefault(k, self.kept + i - rejected)
        new = [i for i, hit in enumerate(out) if hit is None]
        self._add(sigs[new], keys[new])
        return out

    def _add(self, sigs, keys) -> None:
        import numpy as np

        n = len(sigs)
        if not n:
            return
        if self.spill is not None:
            self.spill.write(np.ascontiguousarray(sigs).tobytes())
            self.spill.flush()
        else:
            self.in_memory.extend(sigs)
        ids = np.repeat(np.arange(self.kept, self.kept + n, dtype=np.int32), self.bands)
        flat = keys.ravel()
        order = np.argsort(flat, kind="stable")
        self.runs.append((flat[order], ids[order]))
        self.kept += n
        while (
            len(self.runs) > 1
            and len(self.runs[-2][0]) <= len(self.runs[-1][0]) * 2
            and len(self.runs[-2][0]) + len(self.runs[-1][0]) <= self.RUN_CAP
        ):
            (k1, i1), (k2, i2) = self.runs.pop(-2), self.runs.pop()
            k, i = np.concatenate([k1, k2]), np.concatenate([i1, i2])
            order = np.argsort(k, kind="stable")
            self.runs.append((k[order], i[order]))

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def near_duplicates(texts: list[str], threshold: float, shingle: int, num_perm: int, seed: int = 0) -> dict[int, tuple[int, float]]:
    """For each text that nearly duplicates an earlier one: its index -> (earlier index, estimated Jaccard)."""
    index = NearDupIndex(threshold, shingle, num_perm, seed)
    kept_at: list[int] = []  # kept position -> text index
    dupes: dict[int, tuple[int, float]] = {}
    for i, hit in enumerate(index.check(index.minhashes([words(t) for t in texts]))):
        if hit is None:
            kept_at.append(i)
        else:
            dupes[i] = (kept_at[hit[0]], hit[1])
    return dupes


def _bands(threshold: float, num_perm: int) -> int:
    """Bands whose LSH S-curve midpoint (1/b)^(1/r) sits below the threshold, as close as possible.

    Below, not nearest: a pair just over the threshold should still become a candidate (recall);
    the MinHash Jaccard estimate then rejects candidates under it (precision).
    """
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    below = [b for b in options if (1 / b) ** (b / num_perm) <= threshold - 0.05]
    return min(below, key=lambda b: threshold - (1 / b) ** (b / num_perm)) if below else num_perm
