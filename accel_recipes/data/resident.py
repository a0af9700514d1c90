"""The device-resident data path (airbench / hlb-CIFAR10 style): each split decoded once into a uint8 NCHW tensor,
cached on disk, moved to the training device once, then shuffled, sharded and augmented there in whole batches.

No workers, no per-image Python after the first decode: on a GPU the loader stops being the bottleneck. The
augmentations draw the same distributions as the stream path's (``transforms.py``; ``batch_augment.py``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from accel_recipes.errors import DataError

from ..config import DataArguments
from ..io import atomic_file
from .augmentation import Augmentation
from .batch_augment import crop_flip, draw_crop_flip, draw_resized_crop_boxes, resize, resized_crop
from .loaders import decode_image
from .splits import labels_of
from .transforms import to_rgb

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the decoded tensors change for the same dataset and size
DEFAULT_CACHE_DIR = Path("~/.cache/accel_recipes/resident")
DECODE_CHUNK = 1024


# ---- decode once, cache on disk ----------------------------------------------------------------------------------


def decoded_bytes(count: int, size: int) -> int:
    """Bytes of ``count`` decoded RGB images of size x size as uint8."""
    return count * 3 * size * size


def cache_path(dataset: datasets.Dataset, size: int, cache_dir: str | Path | None = None) -> Path:
    """Where ``decode_split`` caches ``dataset`` decoded at ``size``: keyed by the dataset's fingerprint (which
    changes with its content and every transform applied to it), the size and the format version.

    Next to the dataset's Arrow files when they lie in the ``datasets`` cache (``HF_DATASETS_CACHE`` or
    ``cache_dir``), else in ``cache_dir``, else in ``~/.cache/accel_recipes/resident``: never inside a user's
    ``save_to_disk`` folder.
    """
    name = f"resident-{dataset._fingerprint}-{size}px-v{FORMAT_VERSION}.safetensors"
    fallback = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR.expanduser()
    if dataset.cache_files:
        folder = Path(dataset.cache_files[0]["filename"]).resolve().parent
        roots = [Path(datasets.config.HF_DATASETS_CACHE), *([Path(cache_dir)] if cache_dir is not None else [])]
        if any(folder.is_relative_to(root.expanduser().resolve()) for root in roots):
            return folder / name
    return fallback / name


def decode_images(dataset: datasets.Dataset, size: int) -> tuple[torch.Tensor, np.ndarray, str | None]:
    """The decodable images of ``dataset``'s ``image`` column as uint8 (N, 3, size, size) RGB, resized (bilinear)
    where they have another size; the positions of those that are not decodable, and the first error.

    Cells are read in chunks straight from Arrow (no per-row formatting by ``datasets``); PIL decodes each.
    """
    table = dataset.select_columns(["image"]).with_format("arrow")
    out = np.empty((len(dataset), 3, size, size), dtype=np.uint8)  # filled in place: no second full-size copy
    kept, bad, first_error = 0, [], None
    for start in range(0, len(dataset), DECODE_CHUNK):
        for offset, cell in enumerate(table[start : start + DECODE_CHUNK]["image"].to_pylist()):
            try:
                image = to_rgb(decode_image(cell))
            except DataError as error:
                bad.append(start + offset)
                first_error = first_error or str(error)
                continue
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            out[kept] = np.asarray(image).transpose(2, 0, 1)
            kept += 1
    return torch.from_numpy(out[:kept]), np.asarray(bad, dtype=np.int64), first_error


def _read_cache(path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]] | None:
    """The cached tensors and metadata, or None when the file is missing, unreadable or not what it should be."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as cached:
            metadata = cached.metadata() or {}
            images, labels = cached.get_tensor("images"), cached.get_tensor("labels")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:  # truncated, garbage, half-written
        logger.warning("ignoring the unreadable resident cache %s (%s); decoding again", path, error)
        return None
    shape_ok = images.dtype == torch.uint8 and images.shape[1:] == (3, size, size) and labels.shape == images.shape[:1]
    if not shape_ok or metadata.get("format_version") != str(FORMAT_VERSION):
        logger.warning("ignoring the resident cache %s: unexpected contents %s; decoding again", path, metadata)
        return None
    return images, labels, metadata


def _write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a partial file."""
    try:
        with atomic_file(path) as temporary:
            save_file({"images": images, "labels": labels}, temporary, metadata=metadata)
    except OSError as error:  # a read-only or full disk costs a re-decode next time, not the run
        logger.warning("could not write the resident cache %s (%s); it will be decoded again next time", path, error)


def decode_split(
    dataset: datasets.Dataset, size: int, cache_dir: str | Path | None = None, skip_corrupt: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``dataset`` decoded once as uint8 (N, 3, size, size) RGB, and its int64 labels (N,).

    Served from the safetensors cache at ``cache_path(dataset, size, cache_dir)`` when it is there and sound, else
    decoded and cached. Undecodable images are an error, or left out (with their labels) when ``skip_corrupt``.
    """
    path = cache_path(dataset, size, cache_dir)
    cached = _read_cache(path, size)
    if cached is not None:
        images, labels, metadata = cached
        logger.info("resident cache hit: %d images of %d px from %s", len(images), size, path)
    else:
        started = time.perf_counter()
        images, bad, first_error = decode_images(dataset, size)
        labels = torch.from_numpy(np.delete(labels_of(dataset), bad))
        metadata = {
            "fingerprint": str(dataset._fingerprint),
            "size": str(size),
            "format_version": str(FORMAT_VERSION),
            "skipped": str(len(bad)),
            "first_error": first_error or "",
        }
        _write_cache(path, images, labels, metadata)
        logger.info(
            "decoded %d images at %d px in %.1f s (%.2f GiB), cached at %s",
            len(images),
            size,
            time.perf_counter() - started,
            decoded_bytes(len(images), size) / 2**30,
            path,
        )
    skipped = int(metadata.get("skipped", "0"))
    if skipped and not skip_corrupt:
        raise DataError(
            f"{skipped} image(s) of the split cannot be decoded ({metadata.get('first_error')}); "
            "pass --skip_corrupt_images true to leave them out"
        )
    if skipped:
        logger.warning("left out %d undecodable image(s) (%s)", skipped, metadata.get("first_error"))
    return images, labels


# ---- choosing the path -------------------------------------------------------------------------------------------


def fits_in_memory(dataset: datasets.Dataset, size: int, budget_gb: float) -> bool:
    """Whether ``dataset`` decoded at size x size (uint8 RGB) takes at most ``budget_gb`` GiB."""
    return decoded_bytes(len(dataset), size) <= budget_gb * 2**30


def choose_pipeline(data: DataArguments, dataset: datasets.Dataset, size: int) -> str:
    """``data.data_pipeline``, with ``auto`` made concrete: ``resident`` when ``dataset`` (the train split) decoded
    at ``size`` fits ``data.resident_memory_budget_gb``, else ``stream``. The choice is logged with the sizes."""
    if data.data_pipeline != "auto":
        return data.data_pipeline
    needed = decoded_bytes(len(dataset), size) / 2**30
    choice = "resident" if fits_in_memory(dataset, size, data.resident_memory_budget_gb) else "stream"
    logger.info(
        "data_pipeline auto -> %s: %d train images at %d px decode to %.3f GiB, resident_memory_budget_gb is %.3g",
        choice,
        len(dataset),
        size,
        needed,
        data.resident_memory_budget_gb,
    )
    return choice


# ---- the loader --------------------------------------------------------------------------------------------------


def _seed(*keys: int) -> int:
    # Python's hash of a tuple of ints is the same in every process and every run (no hash randomisation for ints).
    return hash(keys) % 2**63


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class DeviceLoader(DataLoaderStateMixin):
    """Base of the loaders whose batches are made on the training device, not by a DataLoader.

    Registers with Accelerate's ``GradientState`` like a prepared DataLoader, so ``accelerator.accumulate`` syncs
    at the end of each epoch; ``set_epoch`` and ``skip_first_batches`` as on Accelerate's loaders. Subclasses say
    how many batches an epoch has (``__len__``) and how to make batch ``b`` of epoch ``e`` (``_epoch``). Do not pass
    one to ``accelerator.prepare``: its batches are already on the device and sharded.
    """

    epoch: int = 0
    skip_batches: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's order and augmentation for ``epoch``; without it, each iteration is the next."""
        self.epoch = epoch

    def skip_first_batches(self, num_batches: int) -> DeviceLoader:
        """A view of this loader whose next iteration starts at batch ``num_batches`` (resuming mid-epoch)."""
        view = copy.copy(self)
        view.skip_batches = num_batches
        return view

    def __len__(self) -> int:
        raise NotImplementedError

    def _epoch(self, epoch: int) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """The function that makes batch ``b`` of ``epoch`` (work shared by the epoch's batches done once here)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        make_batch = self._epoch(epoch)
        batches = len(self)
        self.gradient_state = GradientState()
        self.begin()
        self.remainder = -1  # padding is marked by label -1, not by a remainder for gather_for_metrics to cut
        try:
            for batch in range(self.skip_batches, batches):
                self.end_of_dataloader = batch == batches - 1
                yield make_batch(batch)
        finally:
            self.end()


class ResidentLoader(DeviceLoader):
    """(images, labels) batches from a uint8 (N, C, H, W) tensor held on ``device``, shuffled and augmented there.

    Training: each epoch one ``randperm`` seeded with (seed, epoch), the same on every process; with
    ``drop_last`` it is cut to a multiple of ``num_processes * batch_size`` (else padded by wrapping around to a
    multiple of ``num_processes``), and process r takes ``perm[r::num_processes]``: disjoint, equal shards that
    cover the kept samples once. Augmentation per batch, from a generator seeded with (seed, epoch, process,
    batch), so a resumed epoch (``skip_first_batches``) sees the batches the uninterrupted one would have.

    Evaluation: no augmentation; contiguous shards padded to ``ceil(N / num_processes)`` with label -1, so every
    process yields batches of the same sizes and gathered metrics count each sample once after dropping labels < 0.

    Images come out uint8 when no resizing happened, else float32 in 0..255. How they are augmented and resized is
    ``augment`` (the run's ``Augmentation``: training batches at its ``input_size``, evaluation ones at its
    ``eval_input_size``); without one, the keywords are its fields (``augmentation="none"`` and the images' own
    size by default).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str | None = None,
        drop_last: bool = False,
        seed: int = 0,
        augment: Augmentation | None = None,
        process_index: int = 0,
        num_processes: int = 1,
        **augment_fields: Any,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
            raise DataError(
                f"resident images must be a non-empty uint8 (N, C, H, W) tensor with one label each, got "
                f"{images.dtype} {tuple(images.shape)} and {len(labels)} labels"
            )
        if augment is None:
            fields = {"augmentation": "none", **augment_fields}
            fields["input_size"] = fields.get("input_size") or images.shape[-1]
            augment = Augmentation(**fields)
        elif augment_fields:
            raise TypeError(f"pass either augment or its fields, not both: {sorted(augment_fields)}")
        side = min(images.shape[-2:])
        if not 0 <= augment.crop_padding < side:
            raise DataError(f"crop_padding must be in [0, {side}) for {side} px images, got {augment.crop_padding}")
        if batch_size < 1 or not 0 <= process_index < num_processes:
            raise DataError(
                f"need batch_size >= 1 and 0 <= process_index < num_processes, got {batch_size}, {process_index}, "
                f"{num_processes}"
            )
        self.device = torch.device(device) if device is not None else images.device
        self.images = _to_device(images.contiguous(), self.device)
        self.labels = _to_device(labels.to(torch.int64), self.device)
        self.batch_size, self.train, self.drop_last, self.seed = batch_size, train, drop_last, seed
        self.augment = augment
        self.input_size = augment.size(train)
        self.process_index, self.num_processes = process_index, num_processes
        self.generator = torch.Generator(device=self.device)

    def _samples_per_process(self) -> int:
        count, world = len(self.images), self.num_processes
        if self.train and self.drop_last:
            return count // (world * self.batch_size) * self.batch_size
        return math.ceil(count / world)

    def __len__(self) -> int:
        samples = self._samples_per_process()
        return samples // self.batch_size if self.train and self.drop_last else math.ceil(samples / self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        """This process's sample indices for ``epoch``, on the device; -1 marks evaluation padding."""
        count, world, rank = len(self.images), self.num_processes, self.process_index
        if not self.train:
            per_process = self._samples_per_process()
            index = torch.arange(rank * per_process, (rank + 1) * per_process, device=self.device)
            return torch.where(index < count, index, -1)
        self.generator.manual_seed(_seed(self.seed, epoch))
        order = torch.randperm(count, generator=self.generator, device=self.device)
        kept = self._samples_per_process() * world
        if kept > count:  # no drop_last: wrap around so every process gets as many samples
            order = order[torch.arange(kept, device=self.device) % count]
        return order[:kept][rank::world]

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        valid = index >= 0
        safe = index.clamp(min=0)
        # index_select on a 2-D view: several times faster on CPU than indexing the 4-D tensor
        images = self.images.view(len(self.images), -1).index_select(0, safe).view(-1, *self.images.shape[1:])
        labels = torch.where(valid, self.labels[safe], -1)
        native = images.shape[-1] == self.input_size and images.shape[-2] == self.input_size
        augment = self.augment
        if not self.train or augment.augmentation == "none":
            return (images if native else resize(images, self.input_size, augment.interpolation)), labels
        self.generator.manual_seed(_seed(self.seed, epoch, self.process_index, batch))
        images = self._crop(images, native)
        if augment.policy is not None:  # per image, after the crop and flip, as on the stream path
            images = augment.policy.apply_batch(images, self.generator)
        return images, labels

    def _crop(self, images: torch.Tensor, native: bool) -> torch.Tensor:
        augment = self.augment
        if augment.augmentation == "resized_crop":
            boxes = draw_resized_crop_boxes(len(images), images.shape[-2], images.shape[-1], self.generator)
            flip = torch.rand(len(images), generator=self.generator, device=self.device) < 0.5
            return resized_crop(images, boxes, flip, self.input_size, augment.interpolation)
        if not native:  # as the stream path: resize to the input size, then crop with padding there
            images = resize(images, self.input_size, augment.interpolation)
        top, left, flip = draw_crop_flip(len(images), augment.crop_padding, self.generator)
        return crop_flip(images, top, left, flip, augment.crop_padding)

    def _epoch(self, epoch: int) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        order = self._order(epoch)
        size = self.batch_size
        return lambda batch: self._batch(order[batch * size : (batch + 1) * size], epoch, batch)
