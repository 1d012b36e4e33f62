"""MNIST and the image sets in its format (through torchvision) as in-memory tensors, plus a small generated
stand-in for tests.

Images are float32 ``[N, 1, 28, 28]`` in [0, 1]. The whole split is held in memory (MNIST train is 47 MB as uint8)
and batched by index, which is far faster on a CPU than a per-item DataLoader and makes the batch order a pure
function of (seed, epoch) — what exact resume needs.

Data sets (``--dataset``): ``mnist``, ``fashion-mnist`` and ``kmnist`` (the same IDX format; torchvision's
``MNIST``, ``FashionMNIST``, ``KMNIST``) and ``synthetic`` (generated, no files). Each loaded split carries its
``name`` (the torchvision class that read the files, or "synthetic digits"), which reports print.

Data folder: ``--data-dir``, else the environment variable ``FASTRQ_DATA``, else ``./data``; torchvision's layout
(``<data-dir>/MNIST/raw/*-ubyte[.gz]``, ``<data-dir>/FashionMNIST/raw/…``). Nothing is downloaded unless asked
(``download=True``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fastrq.errors import FastRQError, InvalidArgumentError

__all__ = ["MissingDataError", "ImageSplit", "DATASETS", "default_data_dir", "load_dataset", "load_splits", "epoch_order",
           "batch_indices"]

MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
# --dataset name → the torchvision class that reads it (all in MNIST's IDX format and folder layout)
TORCHVISION_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
SYNTHETIC_NAME = "synthetic digits"
DATASETS = (*TORCHVISION_SETS, "synthetic")


class MissingDataError(FastRQError, FileNotFoundError):
    """The dataset files are not where they were looked for (and downloading was not requested)."""


@dataclass
class ImageSplit:
    """``images`` float32 ``[N, 1, H, W]`` in [0, 1], ``labels`` int64 ``[N]``, ``name``: the data set's name as
    read from the data ("MNIST", "FashionMNIST", …, "synthetic digits")."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""

    def __len__(self) -> int:
        return self.images.shape[0]


def default_data_dir() -> str:
    return os.environ.get("FASTRQ_DATA") or "./data"


def _subset(split: ImageSplit, size: int | None) -> ImageSplit:
    if size is None or size <= 0 or size >= len(split):
        return split
    # the first N: same for every seed
    return ImageSplit(split.images[:size].clone(), split.labels[:size].clone(), split.name)


# (torchvision class, resolved data folder, train) → the whole split, decoded once per process (a study trains many
# runs on the same data in one process). Callers never modify the tensors in place; subsets are copies.
_LOADED: dict[tuple[str, str, bool], ImageSplit] = {}


def _load_torchvision(class_name: str, data_dir: str, train: bool, download: bool) -> ImageSplit:
    key = (class_name, str(Path(data_dir).resolve()), train)
    if key not in _LOADED:
        _LOADED[key] = _read_torchvision(class_name, data_dir, train, download)
    split = _LOADED[key]
    return ImageSplit(split.images, split.labels, split.name)


def _read_torchvision(class_name: str, data_dir: str, train: bool, download: bool) -> ImageSplit:
    try:
        import torchvision.datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDataError(f"torchvision is needed for {class_name}: pip install 'fastrq[models]'") from exc
    try:
        dataset = getattr(torchvision.datasets, class_name)(data_dir, train=train, download=download)
    except RuntimeError as exc:
        raw = Path(data_dir).resolve() / class_name / "raw"
        raise MissingDataError(
            f"{class_name} was not found under {raw}.\n"
            f"Put the four IDX files there ({', '.join(MNIST_FILES)}, optionally .gz), point --data-dir "
            f"(or the environment variable FASTRQ_DATA) at the folder that contains {class_name}/raw, "
            f"or pass --download to fetch them (needs network access)."
        ) from exc
    images = dataset.data.unsqueeze(1).to(torch.float32).div_(255.0)
    return ImageSplit(images, dataset.targets.to(torch.int64), type(dataset).__name__)


_GENERATED: dict[tuple[int, int], ImageSplit] = {}


def _synthetic(size: int, seed: int) -> ImageSplit:
    """Digit-like 28×28 images: a few random strokes (Gaussian blobs along lines) per class; deterministic (and
    generated once per process)."""
    if (size, seed) not in _GENERATED:
        _GENERATED[(size, seed)] = _generate_synthetic(size, seed)
    split = _GENERATED[(size, seed)]
    return ImageSplit(split.images, split.labels, split.name)


def _generate_synthetic(size: int, seed: int) -> ImageSplit:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (size,), generator=generator)
    class_gen = torch.Generator().manual_seed(1234)
    anchors = torch.rand(10, 3, 2, generator=class_gen) * 16 + 6  # 3 points per class: a 2-stroke polyline
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    t = torch.linspace(0, 1, 12)
    points = []
    for a, b in ((0, 1), (1, 2)):
        seg = anchors[:, a, None, :] + (anchors[:, b, None, :] - anchors[:, a, None, :]) * t[None, :, None]
        points.append(seg)
    path = torch.cat(points, 1)  # [10, 24, 2]
    jitter = torch.randn(size, 1, 2, generator=generator) * 1.5
    centers = path[labels] + jitter  # [N, 24, 2]
    images = torch.zeros(size, 28, 28)
    for p in range(centers.shape[1]):  # one stroke point at a time: memory N·784, not N·24·784
        d2 = (yy - centers[:, p, 0, None, None]) ** 2 + (xx - centers[:, p, 1, None, None]) ** 2
        torch.maximum(images, torch.exp(-d2 / 2.0), out=images)
    images = images.clamp(0, 1)
    return ImageSplit(images.unsqueeze(1).contiguous(), labels, SYNTHETIC_NAME)


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: str | None = None,
    train: bool = True,
    download: bool = False,
    subset: int | None = None,
    synthetic_size: int = 2048,
) -> ImageSplit:
    """One split of ``name`` (one of :data:`DATASETS`), optionally its first ``subset`` images.

    Raises :class:`MissingDataError` (with where to put the files) when the files are absent and ``download`` is
    False."""
    if name in TORCHVISION_SETS:
        split = _load_torchvision(TORCHVISION_SETS[name], data_dir or default_data_dir(), train, download)
    elif name == "synthetic":
        split = _synthetic(synthetic_size if train else max(synthetic_size // 4, 1), seed=0 if train else 1)
    else:
        raise InvalidArgumentError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return _subset(split, subset)


def load_splits(config, *, download: bool = False) -> tuple[ImageSplit, ImageSplit]:
    """The (train, test) splits a training config names: ``config.dataset``, ``config.data_dir`` and its first
    ``config.train_subset`` / ``config.test_subset`` images (0: all)."""
    return tuple(
        load_dataset(config.dataset, data_dir=config.data_dir, train=train, download=download,
                     subset=(config.train_subset if train else config.test_subset) or None)
        for train in (True, False))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a pure function of (n, seed, epoch), independent of global RNG."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_indices(order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """Split an epoch order into this rank's batches: each global batch of ``batch_size * world`` images is dealt
    round-robin to the ranks (every rank gets ``batch_size``; the incomplete last global batch is dropped so all
    ranks run the same number of steps)."""
    global_batch = batch_size * world
    steps = len(order) // global_batch
    if steps == 0:
        raise InvalidArgumentError(
            f"{len(order)} images are fewer than one global batch ({batch_size} per rank × {world} ranks)"
        )
    return [order[s * global_batch + rank: (s + 1) * global_batch: world] for s in range(steps)]
