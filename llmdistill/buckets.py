"""State that grows with the number of problems or traces, kept out of memory: fixed-size numpy
records spilled to disk by the top bits of a 64-bit hash, read back one bucket at a time.

The stages that must relate every trace to its problem (generate's resume: which ``(id, sample)``
are written; data's duplicate ids; filter's per-problem accuracy) join two streams bucket by
bucket: a bucket holds the records of 1/64 of the ids, so what is in memory at once is 1/64 of the
records (about 0.8 MB a bucket for 2M records of 24 bytes), whatever the run's size. Records stay
in memory until ``SPILL`` of them are held; a small run never touches the disk.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

BITS = 6  # 64 buckets
SPILL = 1 << 16  # records held in memory before they go to disk


def h64(text: str) -> int:
    """The 64-bit hash records carry for an id or a text (blake2b: the same on every machine and run)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class Buckets:
    """Records of ``dtype`` (with a ``uint64`` field ``key``), appended in any order; ``bucket(i)``
    gives the records whose key's top ``BITS`` bits are ``i``, in the order they were added.
    Files go to a temporary folder of their own under ``parent`` (the system's temporary folder
    when None), made at the first spill and removed by ``close``."""

    def __init__(self, dtype, key: str = "h", parent: Path | None = None):
        self.dtype, self.key, self.parent = np.dtype(dtype), key, parent
        self.held: list[np.ndarray] = []
        self.n_held = 0
        self.folder: Path | None = None
        self.files: list = []
        self.count = 0

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.held.append(records)
        self.n_held += len(records)
        self.count += len(records)
        if self.n_held >= SPILL:
            self._spill()

    def _spill(self) -> None:
        if not self.held:
            return
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="llmdistill-buckets-", dir=self.parent))
            self.files = [open(self.folder / f"{i:02d}.bin", "wb") for i in range(1 << BITS)]  # noqa: SIM115 (closed in close)
        recs = np.concatenate(self.held)
        self.held, self.n_held = [], 0
        which = (recs[self.key] >> np.uint64(64 - BITS)).astype(np.intp)
        order = np.argsort(which, kind="stable")
        recs, which = recs[order], which[order]
        bounds = np.searchsorted(which, np.arange((1 << BITS) + 1))
        for i in range(1 << BITS):
            if bounds[i] < bounds[i + 1]:
                recs[bounds[i] : bounds[i + 1]].tofile(self.files[i])

    def buckets(self) -> Iterator[np.ndarray]:
        """Every bucket in turn (1/64 of the records each)."""
        if self.folder is None:  # never spilled: all in memory
            recs = np.concatenate(self.held) if self.held else np.zeros(0, dtype=self.dtype)
            which = (recs[self.key] >> np.uint64(64 - BITS)).astype(np.intp)
            order = np.argsort(which, kind="stable")
            recs, which = recs[order], which[order]
            bounds = np.searchsorted(which, np.arange((1 << BITS) + 1))
            for i in range(1 << BITS):
                yield recs[bounds[i] : bounds[i + 1]]
            return
        self._spill()
        for f in self.files:
            f.flush()
        for i in range(1 << BITS):
            yield np.fromfile(self.folder / f"{i:02d}.bin", dtype=self.dtype)

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)  # made by mkdtemp above: ours alone
            self.folder = None
        self.held, self.n_held = [], 0

    def __enter__(self) -> Buckets:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def joined(left: Buckets, right: Buckets) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The two record sets bucket by bucket: records with the same key are in the same pair."""
    yield from zip(left.buckets(), right.buckets(), strict=True)
