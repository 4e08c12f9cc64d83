"""Models that take ``[0, 1]`` pixels: the bundled default, published CIFAR-10/ImageNet nets, user files.

User files include checkpoints in Cohen et al.'s format (``COHEN_ARCHITECTURES``), which ``load_user_model`` recognises.
"""

from dsmooth_core.models.architectures import ARCHITECTURE_NAMES, build_architecture
from dsmooth_core.models.cifar_resnet import CifarResNet, cifar_resnet, cifar_resnet_of_depth
from dsmooth_core.models.cohen_checkpoint import COHEN_ARCHITECTURES, CohenArchitecture, is_cohen_checkpoint
from dsmooth_core.models.constants import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from dsmooth_core.models.errors import ModelLoadError, ModelUnavailableError
from dsmooth_core.models.info import ModelInfo, state_dict_hash
from dsmooth_core.models.normalized import Normalized, wrap
from dsmooth_core.models.preprocess import prepare_image
from dsmooth_core.models.registry import (
    BUNDLED_CARD,
    BUNDLED_WEIGHTS,
    DEFAULT_MODEL,
    MODEL_NAMES,
    ModelSpec,
    available_models,
    load_model,
)
from dsmooth_core.models.user import load_user_model

__all__ = [
    "ARCHITECTURE_NAMES",
    "BUNDLED_CARD",
    "BUNDLED_WEIGHTS",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "COHEN_ARCHITECTURES",
    "DEFAULT_MODEL",
    "MODEL_NAMES",
    "CifarResNet",
    "CohenArchitecture",
    "ModelInfo",
    "ModelLoadError",
    "ModelSpec",
    "ModelUnavailableError",
    "Normalized",
    "available_models",
    "build_architecture",
    "cifar_resnet",
    "cifar_resnet_of_depth",
    "is_cohen_checkpoint",
    "load_model",
    "load_user_model",
    "prepare_image",
    "state_dict_hash",
    "wrap",
]
