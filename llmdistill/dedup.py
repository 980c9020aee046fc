"""Text fingerprints for the filter stage: exact hashes, MinHash-LSH near duplicates, and the
word n-gram overlap used for decontamination (three small pure functions, as in open-r1)."""

from __future__ import annotations

import hashlib
import string

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


def word_ngrams(text: str, n: int) -> list[str]:
    """Word n-grams of the normalized text, in order."""
    words = normalize(text).split()
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def build_ngram_index(texts: list[str], n: int) -> set[str]:
    index: set[str] = set()
    for t in texts:
        index.update(word_ngrams(t, n))
    return index


def shared_ngram(text: str, index: set[str], n: int) -> str | None:
    """The first word n-gram of ``text`` (in reading order) found in ``index``, or None."""
    return next((g for g in word_ngrams(text, n) if g in index), None)


def shingles(text: str, k: int) -> list[str]:
    words = normalize(text).split()
    if len(words) <= k:
        return [" ".join(words)] if words else [""]
    return [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]


def near_duplicates(texts: list[str], threshold: float, shingle: int, num_perm: int, seed: int = 0) -> dict[int, tuple[int, float]]:
    """For each text that nearly duplicates an earlier one: its index -> (earlier index, estimated Jaccard).

    MinHash digests come from rensa (Rust) in one batch; an LSH index over the texts kept so far
    gives candidates, and the MinHash Jaccard estimate confirms them against ``threshold``.
    """
    from rensa import RMinHash, RMinHashLSH

    hashes = RMinHash.from_token_sets([shingles(t, shingle) for t in texts], num_perm, seed)
    lsh = RMinHashLSH(threshold, num_perm, _bands(threshold, num_perm))
    dupes: dict[int, tuple[int, float]] = {}
    for i, mh in enumerate(hashes):
        best = max(((j, mh.jaccard(hashes[j])) for j in lsh.query(mh)), key=lambda x: x[1], default=None)
        if best is not None and best[1] >= threshold:
            dupes[i] = best
        else:
            lsh.insert(i, mh)
    return dupes


def _bands(threshold: float, num_perm: int) -> int:
    """Bands whose LSH S-curve midpoint (1/b)^(1/r) sits below the threshold, as close as possible.

    Below, not nearest: a pair just over the threshold should still become a candidate (recall);
    the MinHash Jaccard estimate then rejects candidates under it (precision).
    """
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    below = [b for b in options if (1 / b) ** (b / num_perm) <= threshold - 0.05]
    return min(below, key=lambda b: threshold - (1 / b) ** (b / num_perm)) if below else num_perm
