"""The model runner's encoder pass over a micro-batch: one pass for the batch's clips, each
request's embeddings in order, the same vectors as a pass per request."""

from __future__ import annotations

import numpy as np
import torch

from shared.synthactions import SynthActions
from victim_server.detection.seat_encoder import load_seat_model
from victim_server.inference.runner import ModelRunner
from victim_server.models import create_model, model_config


def test_runner_embeds_the_micro_batch_in_one_pass_per_clip_shape() -> None:
    torch.manual_seed(0)
    net = create_model("embedded")
    runner = ModelRunner(net, model_config(net), torch.device("cpu"))
    seat = load_seat_model()
    passes: list[int] = []

    def embed(clips: np.ndarray) -> np.ndarray:
        passes.append(len(clips))
        return seat.embed(clips)

    clips, _ = SynthActions(seed=4711).batch(0, 6)
    requests = [clips[:1], clips[1:4], clips[4:5], clips[5:]]
    outputs = runner(requests, embed=embed)
    assert passes == [6]
    alone = [seat.embed(request) for request in requests]
    for output, request, vectors in zip(outputs, requests, alone, strict=True):
        assert output.embeddings is not None
        assert output.embeddings.shape == (len(request), seat.encoder.dim)
        np.testing.assert_allclose(output.embeddings, vectors, atol=1e-5)
    assert all(output.embeddings is None for output in runner(requests))  # not asked: no pass

    passes.clear()
    larger = np.repeat(np.repeat(clips[5:], 2, axis=2), 2, axis=3)  # another clip shape
    mixed = runner([clips[:2], larger], embed=embed)
    assert passes == [2, 1]  # one pass per request when shapes differ, in order
    np.testing.assert_allclose(mixed[1].embeddings, seat.embed(larger), atol=1e-5)  # type: ignore[arg-type]
