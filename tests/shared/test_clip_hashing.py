"""Clip content hashes, victim identity and cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from shared.hashing import (
    CLIP_HASH_HEX_LENGTH,
    IDENTITY_HEX_LENGTH,
    batch_hashes,
    cache_key,
    clip_hash,
    normalise_url,
    victim_identity,
)


def make_clip(shape: tuple[int, ...] = (4, 6, 8, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_clip_hash_is_32_hex_chars_and_deterministic() -> None:
    clip = make_clip()
    digest = clip_hash(clip)
    assert len(digest) == CLIP_HASH_HEX_LENGTH == 32
    int(digest, 16)
    assert clip_hash(clip.copy()) == digest


def test_equal_content_gives_equal_hash_different_content_different_hash() -> None:
    assert clip_hash(make_clip(seed=1)) == clip_hash(make_clip(seed=1))
    assert clip_hash(make_clip(seed=1)) != clip_hash(make_clip(seed=2))


def test_every_single_byte_change_changes_the_hash() -> None:
    clip = make_clip((2, 3, 4, 3))
    base = clip_hash(clip)
    seen = {base}
    for flat_index in range(clip.size):
        changed = clip.copy()
        changed.reshape(-1)[flat_index] ^= 1
        digest = clip_hash(changed)
        assert digest != base
        seen.add(digest)
    assert len(seen) == clip.size + 1


def test_same_bytes_different_shape_or_dtype_hash_differently() -> None:
    clip = make_clip((4, 4, 4, 3))
    reshaped = clip.reshape(2, 8, 4, 3)
    assert reshaped.tobytes() == clip.tobytes()
    assert clip_hash(reshaped) != clip_hash(clip)
    assert clip_hash(clip.view(np.int8)) != clip_hash(clip)


def test_non_contiguous_views_hash_like_their_contiguous_copy() -> None:
    base = make_clip((8, 10, 12, 3))
    views = [
        base[::2],
        base[:, 1:-1, ::3],
        base[..., ::-1],
        np.asfortranarray(base),
        base.transpose(0, 2, 1, 3),
    ]
    for view in views:
        assert not view.flags.c_contiguous
        assert clip_hash(view) == clip_hash(np.ascontiguousarray(view))


def test_read_only_arrays_hash() -> None:
    clip = make_clip()
    frozen = np.frombuffer(clip.tobytes(), dtype=np.uint8).reshape(clip.shape)
    assert not frozen.flags.writeable
    assert clip_hash(frozen) == clip_hash(clip)


def test_clip_hash_rejects_batches_and_non_arrays() -> None:
    with pytest.raises(ValueError, match="one clip"):
        clip_hash(make_clip((1, 4, 6, 8, 3)))
    with pytest.raises(TypeError):
        clip_hash([[1, 2, 3]])  # type: ignore[arg-type]


def test_batch_hashes_are_per_clip() -> None:
    clips = np.stack([make_clip(seed=0), make_clip(seed=1), make_clip(seed=0)])
    hashes = batch_hashes(clips)
    assert hashes == [clip_hash(clip) for clip in clips]
    assert hashes[0] == hashes[2] != hashes[1]
    with pytest.raises(ValueError, match="batch"):
        batch_hashes(make_clip())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Victim.EXAMPLE:8000/", "http://victim.example:8000"),
        ("http://victim.example:80", "http://victim.example"),
        ("https://victim.example:443/api/v1//", "https://victim.example/api/v1"),
        ("http://127.0.0.1:8000/Path/", "http://127.0.0.1:8000/Path"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("http://victim.example/#frag", "http://victim.example"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


def test_victim_identity_is_stable_and_normalised() -> None:
    identity = victim_identity("http://127.0.0.1:8000", "tiny3d.synthactions_v1", "probs", None)
    assert len(identity) == IDENTITY_HEX_LENGTH == 16
    int(identity, 16)
    assert identity == victim_identity(
        "HTTP://127.0.0.1:8000//", " tiny3d.synthactions_v1 ", "PROBS", None
    )
    # Pinned: the digest must not drift between releases, or every cached answer is lost.
    assert identity == "60afc86689cb76ef"


def test_clip_hash_is_pinned() -> None:
    # A change here orphans every cached paid answer; bump the personalisation on purpose only.
    clip = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    assert clip_hash(clip) == "c452f7738446fe5936ba48945bcfb11f"


@pytest.mark.parametrize(
    "changed",
    [
        ("http://127.0.0.1:8001", "m.v1", "topk", 5),
        ("http://127.0.0.1:8000/v2", "m.v1", "topk", 5),
        ("http://127.0.0.1:8000", "m.v2", "topk", 5),
        ("http://127.0.0.1:8000", "m.v1", "probs", 5),
        ("http://127.0.0.1:8000", "m.v1", "topk", 3),
        ("http://127.0.0.1:8000", "m.v1", "topk", None),
    ],
)
def test_victim_identity_changes_with_each_part(changed: tuple[str, str, str, int | None]) -> None:
    assert victim_identity(*changed) != victim_identity("http://127.0.0.1:8000", "m.v1", "topk", 5)


def test_victim_identity_separates_keys_and_answer_policies() -> None:
    base = ("http://127.0.0.1:8000", "m.v1", "probs", None)
    old = victim_identity(*base)
    with_key = victim_identity(*base, key_id="k1", policy_fingerprint="ab" * 16)
    assert with_key != old
    assert with_key != victim_identity(*base, key_id="k2", policy_fingerprint="ab" * 16)
    assert with_key != victim_identity(*base, key_id="k1", policy_fingerprint="cd" * 16)
    assert with_key == victim_identity(*base, key_id="k1", policy_fingerprint="ab" * 16)
    # Servers that publish neither keep the former digest (their caches stay valid).
    assert victim_identity(*base, key_id=None, policy_fingerprint=None) == old


def test_cache_key_joins_identity_and_clip_hash() -> None:
    identity = victim_identity("http://localhost:8000", "m", "logits", None)
    digest = clip_hash(make_clip())
    key = cache_key(identity, digest)
    assert key == f"{identity}:{digest}"
    assert cache_key(identity, digest) != cache_key(
        victim_identity("http://localhost:8000", "m", "probs", None), digest
    )
    with pytest.raises(ValueError, match="identity"):
        cache_key("not hex!", digest)
    with pytest.raises(ValueError, match="clip_hash"):
        cache_key(identity, "")
