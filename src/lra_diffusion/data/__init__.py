"""Datasets, label files and label-noise models.

Every dataset is an :class:`ImageDataset`: ``dataset[i] -> (uint8 (H, W, 3) image, label, index)``
with attributes ``labels`` (int64 ``(N,)``), ``classes``, ``paths`` and ``root``.
"""

from lra_diffusion.data.cifar import (
    CIFAR,
    CIFAR10_CLASSES,
    ProtocolSplit,
    SharedCIFAR10,
    check_md5,
    cifar_protocol_split,
    download_cifar,
    file_md5,
    load_shared_cifar10,
)
from lra_diffusion.data.images import ImageDataset, decode_image, drop_unreadable, load_images

__all__ = [
    "CIFAR",
    "CIFAR10_CLASSES",
    "ImageDataset",
    "ProtocolSplit",
    "SharedCIFAR10",
    "check_md5",
    "cifar_protocol_split",
    "decode_image",
    "download_cifar",
    "drop_unreadable",
    "file_md5",
    "load_images",
    "load_shared_cifar10",
]
