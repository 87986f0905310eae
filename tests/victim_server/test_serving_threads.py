"""Serving threads leave the event loop a core; an explicit setting wins."""

from __future__ import annotations

from victim_server.inference.runner import serving_threads


def test_default_leaves_one_core_to_the_event_loop() -> None:
    assert serving_threads(0, cpus=2) == 1
    assert serving_threads(0, cpus=16) == 15


def test_one_core_still_gets_one_thread() -> None:
    assert serving_threads(0, cpus=1) == 1


def test_an_explicit_count_is_kept() -> None:
    assert serving_threads(4, cpus=2) == 4
