"""The Idempotency-Key fingerprint of a classify body: what makes two requests the same one."""

from __future__ import annotations

import numpy as np

from victim_server.api import classify


def _batch(n: int, seed: int = 0, frames: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, frames, 32, 32, 3), dtype=np.uint8)


def test_the_fingerprint_follows_content_and_shape_not_memory_layout() -> None:
    batch = _batch(2)
    same = _batch(2)
    assert classify._fingerprint(batch) == classify._fingerprint(same)
    assert len(classify._fingerprint(batch)) == 32  # 128 bits, hex
    changed = batch.copy()
    changed[1, 15, 31, 31, 2] ^= 1  # one bit of the last clip's last byte
    assert classify._fingerprint(changed) != classify._fingerprint(batch)
    # The same bytes in another shape are another request.
    reshaped = batch.reshape(4, 8, 32, 32, 3)
    assert classify._fingerprint(reshaped) != classify._fingerprint(batch)
    # A strided view of the same clips (e.g. a Fortran-ordered .npy) is the same request.
    fortran = np.asfortranarray(batch)
    assert classify._fingerprint(fortran) == classify._fingerprint(batch)


async def test_a_batch_too_large_to_hash_on_the_loop_gets_the_same_fingerprint() -> None:
    frames = classify._HASH_ON_LOOP_BYTES // (32 * 32 * 3) + 1  # one clip just over the bound
    large = _batch(1, frames=frames)
    assert large.nbytes > classify._HASH_ON_LOOP_BYTES
    assert await classify._fingerprint_of(large) == classify._fingerprint(large)
    small = _batch(3)
    assert await classify._fingerprint_of(small) == classify._fingerprint(small)
