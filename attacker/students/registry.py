"""Student registry: builders filed by name, as timm's ``register_model`` does.

A builder is keyword-only, ``builder(*, num_classes: int, **arch_kwargs) -> StudentModel``, never
loads weights and never touches the network. Unknown keyword arguments must raise ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from attacker.students.config import HALF_MEAN, QUARTER_STD, StudentPreprocessing, Triple

if TYPE_CHECKING:
    from attacker.students.base import StudentModel

StudentBuilder = Callable[..., "StudentModel"]
SizeKwargs = Callable[[tuple[int, int, int]], dict[str, Any]]
"""Maps an input size (frames, height, width) to the builder kwargs a fixed-size model needs."""

DEFAULT_TINY_SIZE = (8, 32, 32)


@dataclass(frozen=True)
class StudentEntry:
    name: str
    builder: StudentBuilder
    family: str
    default_size: tuple[int, int, int]
    tiny_kwargs: dict[str, Any]
    description: str = ""
    # Input size (frames, height, width) at which ``tiny_kwargs`` is tested.
    tiny_size: tuple[int, int, int] = DEFAULT_TINY_SIZE
    mean: Triple = HALF_MEAN
    std: Triple = QUARTER_STD
    # For models whose parameters depend on the input size (positional embeddings): the
    # builder kwargs that make the model accept a given (frames, height, width).
    size_kwargs: SizeKwargs | None = field(default=None, repr=False)

    def default_preprocessing(self) -> StudentPreprocessing:
        frames, height, width = self.default_size
        return StudentPreprocessing(frames, height, width, mean=self.mean, std=self.std)

    def tiny_preprocessing(self) -> StudentPreprocessing:
        frames, height, width = self.tiny_size
        return StudentPreprocessing(frames, height, width, mean=self.mean, std=self.std)


_REGISTRY: dict[str, StudentEntry] = {}

B = TypeVar("B", bound=StudentBuilder)


def register_student(
    name: str,
    *,
    family: str,
    default_size: tuple[int, int, int],
    tiny_kwargs: dict[str, Any],
    description: str = "",
    tiny_size: tuple[int, int, int] = DEFAULT_TINY_SIZE,
    mean: Triple = HALF_MEAN,
    std: Triple = QUARTER_STD,
    size_kwargs: SizeKwargs | None = None,
) -> Callable[[B], B]:
    """Decorator that files a builder under ``name``; registering a name twice is a bug."""

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"student {name!r} is already registered")
        if len(default_size) != 3 or min(default_size) < 1:
            raise ValueError(f"{name}: default_size must be (frames, height, width)")
        _REGISTRY[name] = StudentEntry(
            name=name,
            builder=builder,
            family=family,
            default_size=tuple(default_size),  # type: ignore[arg-type]
            tiny_kwargs=dict(tiny_kwargs),
            description=description or (builder.__doc__ or "").strip().split("\n")[0],
            tiny_size=tuple(tiny_size),  # type: ignore[arg-type]
            mean=mean,
            std=std,
            size_kwargs=size_kwargs,
        )
        return builder

    return decorate


def get_student_entry(name: str) -> StudentEntry:
    _import_student_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown student {name!r}; registered: {known}") from None


def list_students(family: str | None = None) -> list[str]:
    _import_student_modules()
    return sorted(
        name for name, entry in _REGISTRY.items() if family is None or entry.family == family
    )


def list_families() -> list[str]:
    _import_student_modules()
    return sorted({entry.family for entry in _REGISTRY.values()})


def _import_student_modules() -> None:
    # Importing the architecture modules runs their @register_student decorators.
    from attacker.students import frame, tiny, video  # noqa: F401
