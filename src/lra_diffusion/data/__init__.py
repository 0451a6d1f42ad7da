"""Datasets, label files and label-noise models.

Every dataset is an :class:`ImageDataset`: ``dataset[i] -> (uint8 (H, W, 3) image, label, index)``
with attributes ``labels`` (int64 ``(N,)``), ``classes``, ``paths`` (``None`` when array-backed),
``indices`` and ``root``. :func:`load_images` decodes a dataset into one ``(N, H, W, 3)`` array.

Label files (:mod:`.labels`) load as int64 arrays aligned with the dataset index; noise models
(:mod:`.noise`) return ``(noisy_labels, realised_transition_matrix)``. Text data (:mod:`.text`) is a
:class:`TextDataset` (``dataset[i] -> (text, label, index)``).
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
from lra_diffusion.data.folder import IMG_EXTENSIONS, ImageFolder, ListFileDataset, read_list_file
from lra_diffusion.data.images import ImageDataset, decode_image, drop_unreadable, load_images
from lra_diffusion.data.labels import (
    check_labels,
    load_cifar_n,
    load_label_file,
    load_pmd_labels,
    parse_pmd_name,
    save_label_file,
)
from lra_diffusion.data.make_noise import NoiseReport, format_report, make_noisy_label_file
from lra_diffusion.data.noise import (
    CIFAR100_COARSE,
    NOISE_MODELS,
    as_generator,
    asymmetric_map,
    asymmetric_noise,
    compose_noise,
    instance_noise,
    make_noisy_labels,
    noise_rate,
    pairflip_noise,
    parse_noise_steps,
    pmd_noise,
    symmetric_noise,
    transition_matrix,
)
from lra_diffusion.data.text import (
    AG_NEWS_CLASSES,
    TextDataset,
    load_banking77,
    load_noisy_ag_news,
    load_text_file,
    open_texts,
)
from lra_diffusion.data.webdata import (
    CLOTHING1M_CLASSES,
    Clothing1M,
    Food101,
    Food101N,
    ILSVRC12Val,
    MiniWebVision,
    read_webvision_synsets,
)

__all__ = [
    "AG_NEWS_CLASSES",
    "CIFAR",
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE",
    "CLOTHING1M_CLASSES",
    "Clothing1M",
    "Food101",
    "Food101N",
    "IMG_EXTENSIONS",
    "ILSVRC12Val",
    "ImageDataset",
    "ImageFolder",
    "ListFileDataset",
    "MiniWebVision",
    "NOISE_MODELS",
    "NoiseReport",
    "ProtocolSplit",
    "SharedCIFAR10",
    "TextDataset",
    "as_generator",
    "asymmetric_map",
    "asymmetric_noise",
    "check_labels",
    "check_md5",
    "cifar_protocol_split",
    "compose_noise",
    "decode_image",
    "download_cifar",
    "drop_unreadable",
    "file_md5",
    "format_report",
    "instance_noise",
    "load_banking77",
    "load_cifar_n",
    "load_images",
    "load_label_file",
    "load_noisy_ag_news",
    "load_pmd_labels",
    "load_shared_cifar10",
    "load_text_file",
    "make_noisy_label_file",
    "make_noisy_labels",
    "noise_rate",
    "open_texts",
    "pairflip_noise",
    "parse_noise_steps",
    "parse_pmd_name",
    "pmd_noise",
    "read_list_file",
    "read_webvision_synsets",
    "save_label_file",
    "symmetric_noise",
    "transition_matrix",
]
