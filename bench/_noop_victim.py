"""A real uvicorn victim whose model answers zeros at once: the request path without compute.

Settings come from ``VIDSTEAL_*`` like ``python -m victim_server serve``; used by
bench/victim_throughput.py to measure the victim's non-model overhead.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as victim_server/__main__.py

import torch
import uvicorn

from victim_server.app import create_app
from victim_server.models import create_model, model_config
from victim_server.models.config import ModelConfig
from victim_server.settings import Settings


class NullVideoModel(torch.nn.Module):
    """Answers zero logits instantly, with the embedded victim's config (labels, input spec)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.model_config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.model_config.num_classes)


def main() -> None:
    settings = Settings()  # type: ignore[call-arg]  # admin token from the environment
    model = NullVideoModel(model_config(create_model("embedded")))
    app = create_app(settings, model=model)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
