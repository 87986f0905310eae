"""``StudentModel``: a backbone that yields pooled features, and a linear head on top.

Every registered student is one, so training, distillation and evaluation code never needs to know
the architecture: ``forward_features`` / ``forward_head`` / ``reset_classifier`` as in timm, and
``backbone_parameters`` / ``head_parameters`` for optimiser groups (lower LR on the backbone).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

import torch
from torch import nn

from attacker.students.config import StudentConfig, default_labels

StateDict = dict[str, torch.Tensor]


class StudentModel(nn.Module):
    """Video classifier = ``backbone`` ((B, 3, T, H, W) -> (B, F)) + dropout + ``nn.Linear`` head.

    Input clips are float (B, 3, T, H, W), normalised as the attached
    :class:`~attacker.students.config.StudentPreprocessing` says.

    ``checkpoint_ignore`` names key prefixes of the backbone's original checkpoints that are not
    part of the backbone here (e.g. torchvision's ``fc.``, whose role the student head takes), so
    a full upstream checkpoint loads as backbone weights.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_features: int,
        num_classes: int,
        drop_rate: float = 0.0,
        checkpoint_ignore: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.backbone = backbone
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.drop_rate = float(drop_rate)
        self.checkpoint_ignore = tuple(checkpoint_ignore)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.head = nn.Linear(self.num_features, self.num_classes)
        self._student_config: StudentConfig | None = None

    @property
    def student_config(self) -> StudentConfig:
        """Architecture, labels and preprocessing, attached by ``create_student``.

        Raises AttributeError on a model that was built by hand (so ``getattr(model,
        "student_config", None)`` works).
        """
        if self._student_config is None:
            raise AttributeError("student_config: model was not built by create_student")
        return self._student_config

    @student_config.setter
    def student_config(self, config: StudentConfig) -> None:
        if not isinstance(config, StudentConfig):
            raise TypeError(f"student_config must be a StudentConfig, got {type(config).__name__}")
        if config.num_classes != self.num_classes:
            raise ValueError(
                f"config has {config.num_classes} classes but the head has {self.num_classes}"
            )
        self._student_config = config

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features) from clips (B, 3, T, H, W)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected clips shaped (B, 3, T, H, W), got {tuple(x.shape)}")
        features: torch.Tensor = self.backbone(x)
        return features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from pooled features (B, num_features)."""
        logits: torch.Tensor = self.head(self.head_drop(features))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, *, labels: tuple[str, ...] | None = None) -> None:
        """Replace the head with a fresh ``num_classes``-way linear layer (backbone untouched)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if labels is not None and len(labels) != num_classes:
            raise ValueError(f"{len(labels)} labels given for num_classes={num_classes}")
        old = self.head.weight
        self.head = nn.Linear(self.num_features, num_classes).to(old.device, old.dtype)
        self.num_classes = int(num_classes)
        if self._student_config is not None:
            self._student_config = replace(
                self._student_config,
                num_classes=num_classes,
                labels=tuple(labels) if labels is not None else default_labels(num_classes),
            )

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def adapt_backbone_state(
        self, state: Mapping[str, torch.Tensor]
    ) -> tuple[StateDict, tuple[str, ...]]:
        """Map a backbone checkpoint onto ``self.backbone``'s keys.

        Returns the adapted state and the key prefixes that may stay missing because such a
        checkpoint cannot hold them (a frame model's temporal layers when the file is a 2D image
        checkpoint). A backbone may define ``adapt_checkpoint(state)`` to do its own mapping.
        """
        kept = {
            key: value
            for key, value in state.items()
            if not (self.checkpoint_ignore and key.startswith(self.checkpoint_ignore))
        }
        adapt = getattr(self.backbone, "adapt_checkpoint", None)
        if callable(adapt):
            adapted, allowed_missing = adapt(kept)
            return dict(adapted), tuple(allowed_missing)
        return kept, ()
