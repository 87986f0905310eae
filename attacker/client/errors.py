"""What can go wrong when talking to a victim.

AttackerError
├── BudgetExhausted   429 budget-exhausted: the key has no queries left (not retried)
├── Blocked           403: the key is revoked or blocked by detection (not retried)
├── VictimError       any other refusal; carries the victim's problem+json
└── RetriesExhausted  429 throttled / 503 / 409 / timeouts kept failing past the retry policy
                      (``throttled`` says whether the last failure was detection throttling)
"""

from __future__ import annotations

from shared.problems import Problem, ProblemType


class AttackerError(Exception):
    pass


class VictimError(AttackerError):
    def __init__(self, status: int, problem: Problem | None, text: str = "") -> None:
        detail = problem.detail if problem and problem.detail else text[:200]
        super().__init__(f"victim answered {status}: {detail}")
        self.status = status
        self.problem = problem


class BudgetExhausted(VictimError):
    pass


class Blocked(VictimError):
    pass


class RetriesExhausted(AttackerError):
    """``status`` and ``kind``: the last failure (None for a connection error or timeout)."""

    def __init__(
        self, message: str, *, status: int | None = None, kind: ProblemType | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind

    @property
    def throttled(self) -> bool:
        return self.kind is ProblemType.DETECTION_THROTTLED
