"""Exact and near-duplicate images, found on the decoded cache so no file is read twice.

Duplicates leak: the same photo in training and test inflates every metric, and one photo filed
under two identities is a label error. Exact duplicates have identical decoded pixels (which covers
byte-identical files); near duplicates have perceptual hashes (pHash: the signs of the 8 x 8
lowest DCT frequencies of a 32 x 32 grey thumbnail) at most ``max_distance`` bits apart, which
catches re-encoded, resized or lightly edited copies. Duplicates form groups (connected
components), and the splits keep every group on one side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dctn

from facecls.atomic import write_json

# Bits (of 64) two pHashes may differ by and still count as the same picture. 4 is tight: on LFW
# (aligned faces with similar backgrounds) different photos of one person sit 10+ bits apart.
NEAR_DISTANCE = 4
_THUMB, _LOW = 32, 8
# Bump when the grouping changes, so cached duplicate groups are not reused.
_CACHE_VERSION = 1


@dataclass
class Duplicates:
    """What :func:`find_duplicates` found.

    Attributes:
        groups: ``(N,)`` int64 group id of every image; images with no duplicate have their own.
        exact: groups of indices with identical pixels (each of two or more images).
        near: groups of indices joined by near-duplicate pairs that are not all exact copies.
        conflicts: groups (exact or near) whose images are filed under different identities.
        max_distance: the pHash bits a near duplicate could differ in (negative: none sought).
    """

    groups: np.ndarray
    exact: list[list[int]] = field(default_factory=list)
    near: list[list[int]] = field(default_factory=list)
    conflicts: list[list[int]] = field(default_factory=list)
    max_distance: int = NEAR_DISTANCE

    def report(self, paths: list[str], identities: list[str]) -> dict[str, Any]:
        """The ``duplicates`` section of ``data_report.json`` (paths, not indices)."""

        def named(groups: list[list[int]]) -> list[list[str]]:
            return [[paths[i] for i in g] for g in groups]

        return {
            "method": "identical decoded pixels"
            + (f"; pHash within {self.max_distance} of 64 bits" if self.max_distance >= 0 else ""),
            "exact_groups": len(self.exact),
            "exact_images": sum(len(g) for g in self.exact),
            "near_groups": len(self.near),
            "near_images": sum(len(g) for g in self.near),
            "label_conflicts": len(self.conflicts),
            "exact": named(self.exact),
            "near": named(self.near),
            "conflicts": [
                [{"path": paths[i], "identity": identities[i]} for i in g] for g in self.conflicts
            ],
        }


# Float working memory of one hashing chunk. Small on purpose: the allocator keeps freed large
# temporaries, so 2,048-image chunks left LFW-8 at 112 px (173 MiB of uint8) with +0.8 GiB of
# resident memory, 4 MiB chunks with +24 MiB (measured with /proc/self/statm).
_CHUNK_BYTES = 4 * 2**20


def phash(images: torch.Tensor, chunk: int | None = None) -> np.ndarray:
    """64-bit perceptual hashes of uint8 images ``(N, 3, H, W)`` as ``(N,)`` uint64.

    ``chunk`` images are converted to float at a time (default: about 4 MiB of float grey).
    """
    out = np.empty(images.shape[0], dtype=np.uint64)
    weights = (0.299, 0.587, 0.114)
    powers = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)
    if chunk is None:
        chunk = max(1, _CHUNK_BYTES // (4 * images.shape[2] * images.shape[3]))
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].cpu()
        # Channel by channel (same order of float operations as a weighted sum over channels),
        # so no float copy of all three channels is ever made.
        grey = x[:, 0:1].float() * weights[0]  # (B, 1, H, W)
        grey += x[:, 1:2].float() * weights[1]
        grey += x[:, 2:3].float() * weights[2]
        thumb = F.interpolate(
            grey, size=(_THUMB, _THUMB), mode="bilinear", antialias=True, align_corners=False
        )
        low = dctn(thumb[:, 0].double().numpy(), axes=(1, 2), norm="ortho")[:, :_LOW, :_LOW]
        low = low.reshape(len(low), -1)
        bits = low > np.median(low, axis=1, keepdims=True)  # (B, 64)
        out[start : start + len(bits)] = (bits.astype(np.uint64) * powers).sum(
            axis=1, dtype=np.uint64
        )
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def near_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 256) -> np.ndarray:
    """``(P, 2)`` index pairs ``i < j`` whose hashes differ in at most ``max_distance`` bits.

    ``chunk`` rows of the all-pairs distance matrix at a time: 256 × 5,000 images is 10 MB of
    XORs, so the check stays small next to the images themselves.
    """
    pairs = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        distance = _popcount(block[:, None] ^ hashes[None, :])  # (B, N)
        i, j = np.nonzero(distance <= max_distance)
        i = i + start
        keep = i < j
        pairs.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes (union-find with path halving)."""
    parent = np.arange(n)

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(a) for a in range(n)], dtype=np.int64)


def _members(labels: np.ndarray) -> list[list[int]]:
    """Groups of two or more indices sharing a label, each sorted, ordered by first member."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [g.tolist() for g in np.split(order, bounds) if len(g) > 1]
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def find_duplicates(
    images: torch.Tensor, targets: np.ndarray, max_distance: int = NEAR_DISTANCE
) -> Duplicates:
    """Group exact and near-duplicate images.

    Args:
        images: uint8 ``(N, 3, S, S)`` decoded images.
        targets: ``(N,)`` identity index of each image.
        max_distance: pHash bits that may differ for a near duplicate; negative disables them.
    """
    n = images.shape[0]
    first: dict[bytes, int] = {}
    exact_pairs = []
    for i in range(n):
        digest = hashlib.sha256(images[i].numpy().tobytes()).digest()
        j = first.setdefault(digest, i)
        if j != i:
            exact_pairs.append((j, i))
    exact_array = np.array(exact_pairs, dtype=np.int64).reshape(-1, 2)
    exact_labels = _components(n, exact_array)
    pairs = exact_array
    if max_distance >= 0 and n > 1:
        pairs = np.concatenate([exact_array, near_pairs(phash(images), max_distance)])
    groups = _components(n, pairs)
    all_groups = _members(groups)
    exact = _members(exact_labels)
    near = [g for g in all_groups if len(set(exact_labels[g].tolist())) > 1]
    conflicts = [g for g in all_groups if len(set(targets[g].tolist())) > 1]
    return Duplicates(groups, exact, near, conflicts, max_distance)


def find_duplicates_cached(
    images: torch.Tensor, targets: np.ndarray, max_distance: int, cache_dir: Path, data_key: str
) -> Duplicates:
    """:func:`find_duplicates`, stored beside the decode cache and reused while the files are
    unchanged (``data_key`` is the decode cache's key, which covers every file's size and time).
    """
    h = hashlib.sha256(f"v{_CACHE_VERSION}:{data_key}:{max_distance}:{images.shape}".encode())
    h.update(np.ascontiguousarray(targets, dtype=np.int64).tobytes())
    path = Path(cache_dir) / "duplicates" / f"{h.hexdigest()[:24]}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return Duplicates(
            np.array(saved["groups"], dtype=np.int64), saved["exact"], saved["near"],
            saved["conflicts"], saved["max_distance"],
        )  # fmt: skip
    found = find_duplicates(images, targets, max_distance)
    write_json(path, {
        "groups": found.groups.tolist(), "exact": found.exact, "near": found.near,
        "conflicts": found.conflicts, "max_distance": found.max_distance,
    })  # fmt: skip
    return found
