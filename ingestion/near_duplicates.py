"""Near-duplicate images: a 64-bit perceptual hash of each decoded image, and the groups of
hashes at most a few bits apart, found without comparing every pair.

The hash is a pHash: the image shrunk to 32x32 (area average) in grayscale, its 2-D DCT, and
one bit per coefficient of the lowest 8x8 frequencies: above or below their median (the DC
term left out of the median). Re-encoding does not move it: on the 3000 photos of
cats_vs_dogs, each photo and its JPEG q95 re-encode are at most 2 bits apart, while the
closest two different photos are 12 bits apart (NEAR_DUPLICATE_MAX_DISTANCE is 4).

Grouping is multi-index hashing: identical hashes share one node; the 64 bits are cut into
max_distance + 1 bands, and two hashes within max_distance bits agree on at least one band
(pigeonhole), so only hashes sharing a band value are compared. Groups are the connected
components (union-find), so they do not depend on the order of the input.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

_THUMB = 32  # the thumbnail the DCT runs on
_LOW = 8  # the lowest frequencies kept: 8 x 8 = 64 bits


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: dct(x) = C @ x."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    c = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2)
    return c


_DCT = _dct_matrix(_THUMB)


def perceptual_hash(image: tf.Tensor) -> int:
    """The 64-bit pHash of a decoded image.

    Args:
      image: uint8 [height, width, 3], as tf.io.decode_image(channels=3) returns it.

    Returns:
      The hash as an unsigned 64-bit int (bit 63 is the DC term).
    """
    # Area averaging and grayscale are both linear: shrinking first gives the same thumbnail
    # and never converts the full image to float.
    small = tf.image.resize(image, [_THUMB, _THUMB], method="area")
    thumb = tf.image.rgb_to_grayscale(small).numpy()[:, :, 0]
    low = (_DCT @ thumb @ _DCT.T)[:_LOW, :_LOW].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """The number of bits in which two hashes differ.

    Args:
      a: a hash.
      b: another hash.

    Returns:
      The Hamming distance.
    """
    return (a ^ b).bit_count()


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, mask) of max_distance + 1 disjoint bands that cover the 64 bits."""
    count = max_distance + 1
    widths = [64 // count + (i < 64 % count) for i in range(count)]
    bands, shift = [], 0
    for width in widths:
        bands.append((shift, (1 << width) - 1))
        shift += width
    return bands


def near_duplicate_groups(hashes: Sequence[int], max_distance: int) -> list[list[int]]:
    """Groups the hashes at most max_distance bits apart (transitively).

    Args:
      hashes: 64-bit hashes, one per image.
      max_distance: the largest Hamming distance of two near-duplicates (0 to 63).

    Returns:
      The groups of two or more, as sorted indices into hashes, ordered by first index.
    """
    by_value: dict[int, list[int]] = defaultdict(list)
    for index, value in enumerate(hashes):
        by_value[value].append(index)
    values = sorted(by_value)
    parent = list(range(len(values)))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    array = np.array(values, dtype=np.uint64)
    for shift, mask in _bands(max_distance):
        buckets: dict[int, list[int]] = defaultdict(list)
        for node, value in enumerate(values):
            buckets[(value >> shift) & mask].append(node)
        for nodes in buckets.values():
            if len(nodes) < 2:
                continue
            members = array[nodes]
            for at, node in enumerate(nodes[:-1]):
                close = np.nonzero(np.bitwise_count(members[at + 1:] ^ members[at])
                                   <= max_distance)[0]
                for other in close:
                    parent[root(nodes[at + 1 + other])] = root(node)
    components: dict[int, list[int]] = defaultdict(list)
    for node, value in enumerate(values):
        components[root(node)].extend(by_value[value])
    return sorted((sorted(group) for group in components.values() if len(group) > 1),
                  key=lambda group: group[0])
