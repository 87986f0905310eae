"""Student architectures for the attacker: one registry, one factory, one export format.

Families: ``torchvision`` (r3d_18, mc3_18, r2plus1d_18, s3d, swin3d_t, mvit_v2_s),
``pytorchvideo`` (x3d_xs, slowfast_r18), ``frame`` (timm 2D backbones per frame with temporal
pooling) and ``tiny`` (CPU students for the range).
Every student is a :class:`StudentModel`; build one with :func:`create_student`, feed it with
:func:`student_preprocess`, save it with :func:`export_student` and reload it anywhere with
:func:`load_exported_student`. Nothing here downloads weights.
"""

# Imported for its @register_student builders (pytorchvideo itself loads when one is built).
from attacker.students import pytorchvideo as _pytorchvideo  # noqa: F401
from attacker.students.base import StudentModel
from attacker.students.config import StudentConfig, StudentPreprocessing
from attacker.students.export import (
    export_student,
    load_exported_student,
    predict,
    read_exported_config,
)
from attacker.students.factory import create_student, student_config
from attacker.students.preprocess import student_preprocess
from attacker.students.registry import (
    StudentEntry,
    get_student_entry,
    list_families,
    list_students,
    register_student,
)
from attacker.students.weights import StudentWeightsError, load_backbone_weights

__all__ = [
    "StudentConfig",
    "StudentEntry",
    "StudentModel",
    "StudentPreprocessing",
    "StudentWeightsError",
    "create_student",
    "export_student",
    "get_student_entry",
    "list_families",
    "list_students",
    "load_backbone_weights",
    "load_exported_student",
    "predict",
    "read_exported_config",
    "register_student",
    "student_config",
    "student_preprocess",
]
