"""The device-resident data path: every split decoded once (cached on disk by fingerprint), shuffled, sharded and
augmented in whole batches on the device; the same images, labels and augmentation distributions as the stream path.

Statistical tests are seeded, so they are deterministic; their thresholds (p < 0.001) are what a real difference of
distribution would break.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import datagen
import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors import safe_open
from scipy import stats
from torchvision.transforms import RandomResizedCrop

from accel_recipes.config import make_args
from accel_recipes.data import DataError, build_data, make_dataloader, make_transform
from accel_recipes.data import resident as resident_module
from accel_recipes.data.batch_augment import draw_resized_crop_boxes
from accel_recipes.data.policies import Policy
from accel_recipes.data.resident import ResidentLoader, cache_path, choose_pipeline, decode_split, fits_in_memory
from accel_recipes.data.splits import labels_of
from accel_recipes.data.transforms import RESIZED_CROP_RATIO, RESIZED_CROP_SCALE

SIZE = 32
PAD = 4


def stream_args(seed: int = 0):
    return make_args({"dataloader_pin_memory": False, "seed": seed}).training


def stream_epoch(dataset, transform, batch_size: int = 64, shuffle: bool = False, seed: int = 0, epoch: int = 0):
    loader = make_dataloader(dataset, transform, batch_size, shuffle=shuffle, training=stream_args(seed))
    loader.sampler.set_epoch(epoch)
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


def resident_epoch(loader: ResidentLoader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """CIFAR-10-shaped generated data through build_data: 180 train / 20 validation / 50 test images."""
    path = datagen.make_cifar_hub_dataset(tmp_path_factory.mktemp("hub"), train_per_class=20, test_per_class=5)
    return build_data(make_args({"dataset_name": str(path)}).data, seed=0)


# ---- coordinate images: every augmented pixel says where it came from ---------------------------------------------

SOURCES = 32  # distinct images, told apart by their blue channel


def coordinate_image(source: int) -> np.ndarray:
    """Red = 8 * row + 4 and green = 8 * column + 4 (linear in the pixel centre's coordinate, 8y and 8x), blue = the
    source's id: a crop's offsets, flip and box can be read back from its pixels."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([8 * rows + 4, 8 * columns + 4, np.full_like(rows, 8 * source)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def coordinates() -> datasets.Dataset:
    """2,048 rows: the 32 coordinate images, 64 times each."""
    sources = np.arange(2048) % SOURCES
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=SOURCES)})
    return datasets.Dataset.from_dict(
        {"image": [coordinate_image(s) for s in sources], "label": sources.tolist()}, features=features
    )


@pytest.fixture(scope="module")
def coordinates_decoded(coordinates, tmp_path_factory):
    return decode_split(coordinates, SIZE, tmp_path_factory.mktemp("cache"))


def both_paths(coordinates, decoded, augmentation: str, input_size: int = SIZE, policy: Policy | None = None):
    """One training epoch of the coordinate images through the stream path and through the resident path."""
    transform = make_transform(True, augmentation, input_size, SIZE, PAD, policy=policy)
    stream = stream_epoch(coordinates, transform, 256, shuffle=True)
    loader = ResidentLoader(
        *decoded, 256, train=True, seed=0, augmentation=augmentation, input_size=input_size, crop_padding=PAD,
        policy=policy,
    )  # fmt: skip
    return stream, resident_epoch(loader)


def read_crop_flip(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top, left, flipped) of each crop_flip output, from its central pixels (which no reflection reaches)."""
    pixels = images.double().numpy()
    row = (pixels[:, 0, 16, 16] - 4) / 8
    column_16, column_15 = (pixels[:, 1, 16, 16] - 4) / 8, (pixels[:, 1, 16, 15] - 4) / 8
    flipped = column_16 < column_15
    # not flipped: output column j is padded column left + j; flipped: padded column left + 31 - j
    left = np.where(flipped, column_16 + PAD - 15, column_16 + PAD - 16)
    return (row + PAD - 16).astype(int), left.astype(int), flipped


def read_boxes(images: torch.Tensor) -> np.ndarray:
    """(top, left, height, width, flipped) of each resized_crop output: red and green are 8y and 8x, and sampling
    them at output pixels 2 and size - 3 (inside every box, clear of the borders) gives the box exactly."""
    pixels = images.double().numpy()
    size = pixels.shape[-1]
    near, far = 2, size - 3
    y_near, y_far = pixels[:, 0, near, size // 2] / 8, pixels[:, 0, far, size // 2] / 8
    x_near, x_far = pixels[:, 1, size // 2, near] / 8, pixels[:, 1, size // 2, far] / 8
    height = (y_far - y_near) * size / (far - near)
    width = np.abs(x_far - x_near) * size / (far - near)
    flipped = x_far < x_near
    top = y_near - (near + 0.5) * height / size
    left = np.where(flipped, x_far - (near + 0.5) * width / size, x_near - (near + 0.5) * width / size)
    return np.stack([top, left, height, width, flipped], axis=1)


# ---- decoding and the cache --------------------------------------------------------------------------------------


def test_eval_batches_are_the_stream_paths_eval_tensors_bit_for_bit(bundle, tmp_path):
    for split in (bundle.validation, bundle.test):
        stream_images, stream_labels = stream_epoch(split, make_transform(False, "crop_flip", SIZE, SIZE))
        images, labels = decode_split(split, SIZE, tmp_path)
        resident_images, resident_labels = resident_epoch(ResidentLoader(images, labels, 8, train=False))
        assert resident_images.dtype == torch.uint8
        assert torch.equal(resident_images, stream_images) and torch.equal(resident_labels, stream_labels)
        assert torch.equal(labels, torch.tensor(labels_of(split)))


def test_an_unchanged_dataset_hits_the_cache_and_a_changed_one_is_decoded_again(bundle, tmp_path, monkeypatch):
    calls = []
    real_decode = resident_module.decode_images
    monkeypatch.setattr(resident_module, "decode_images", lambda *a: calls.append(1) or real_decode(*a))
    images, labels = decode_split(bundle.train, SIZE, tmp_path)
    path = cache_path(bundle.train, SIZE, tmp_path)
    written = path.stat().st_mtime_ns
    again_images, again_labels = decode_split(bundle.train, SIZE, tmp_path)
    assert len(calls) == 1 and path.stat().st_mtime_ns == written
    assert torch.equal(again_images, images) and torch.equal(again_labels, labels)

    relabelled = bundle.train.map(lambda row: {"label": (row["label"] + 1) % 10}, keep_in_memory=True)
    _, new_labels = decode_split(relabelled, SIZE, tmp_path)
    assert len(calls) == 2 and cache_path(relabelled, SIZE, tmp_path) != path
    assert torch.equal(new_labels, (labels + 1) % 10)  # not the stale labels
    decode_split(bundle.train, 16, tmp_path)  # another decode size is another entry
    assert len(calls) == 3


def test_regenerated_data_with_another_seed_is_not_served_stale(tmp_path):
    trains = []
    for seed in (0, 1):
        path = datagen.make_cifar_hub_dataset(tmp_path / f"seed{seed}", train_per_class=3, test_per_class=1, seed=seed)
        trains.append(build_data(make_args({"dataset_name": str(path)}).data, seed=0).train)
    first, second = (decode_split(train, SIZE, tmp_path / "cache")[0] for train in trains)
    assert cache_path(trains[0], SIZE, tmp_path / "cache") != cache_path(trains[1], SIZE, tmp_path / "cache")
    expected = stream_epoch(trains[1], make_transform(False, "none", SIZE, SIZE))[0]
    assert torch.equal(second, expected) and not torch.equal(first, second)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(bundle, tmp_path, damage):
    images, labels = decode_split(bundle.validation, SIZE, tmp_path)
    path = cache_path(bundle.validation, SIZE, tmp_path)
    content = path.read_bytes()
    path.write_bytes(b"not a safetensors file" if damage == "garbage" else content[: len(content) // 2])
    again_images, again_labels = decode_split(bundle.validation, SIZE, tmp_path)
    assert torch.equal(again_images, images) and torch.equal(again_labels, labels)
    with safe_open(str(path), framework="pt") as cached:  # rewritten whole
        assert cached.metadata()["fingerprint"] == bundle.validation._fingerprint
        assert torch.equal(cached.get_tensor("images"), images)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_the_cache_goes_next_to_the_datasets_cache_but_never_into_a_users_folder(bundle, tmp_path, monkeypatch):
    arrow_folder = os.path.dirname(bundle.train.cache_files[0]["filename"])
    assert cache_path(bundle.train, SIZE, tmp_path).parent == tmp_path  # a save_to_disk folder is left alone
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", os.path.dirname(arrow_folder))
    assert str(cache_path(bundle.train, SIZE, tmp_path).parent) == os.path.realpath(arrow_folder)


def test_undecodable_images_are_an_error_or_left_out_with_their_labels(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    cells = [coordinate_image(0), {"bytes": b"not an image", "path": None}, coordinate_image(2)]
    broken = datasets.Dataset.from_dict({"image": cells, "label": [0, 1, 2]}, features=features)
    with pytest.raises(DataError, match="1 image.*cannot be decoded.*skip_corrupt_images"):
        decode_split(broken, SIZE, tmp_path)
    images, labels = decode_split(broken, SIZE, tmp_path, skip_corrupt=True)
    assert labels.tolist() == [0, 2] and images[1, 2, 0, 0] == 16  # the third image's blue channel


# ---- order and shards --------------------------------------------------------------------------------------------


def numbered(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images whose first two pixels spell their index, and labels equal to it."""
    images = torch.zeros(count, 3, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(count) // 256, torch.arange(count) % 256
    return images, torch.arange(count)


def index_of(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()).tolist()


def test_resident_and_stream_epochs_have_the_label_multiset_of_the_data(bundle, tmp_path):
    images, labels = decode_split(bundle.train, SIZE, tmp_path)
    loader = ResidentLoader(images, labels, 32, train=True, seed=3, augmentation="crop_flip")
    expected = Counter(labels_of(bundle.train).tolist())
    orders = []
    for epoch in range(2):
        _, resident_labels = resident_epoch(loader)
        _, stream_labels = stream_epoch(bundle.train, make_transform(True, "crop_flip", SIZE, SIZE), 32, True, 3, epoch)
        assert Counter(resident_labels.tolist()) == expected == Counter(stream_labels.tolist())
        orders.append(resident_labels)
    assert not torch.equal(*orders)  # a new permutation each epoch


@pytest.mark.parametrize(("count", "drop_last"), [(103, True), (103, False), (96, True)])
def test_two_processes_shards_are_disjoint_equal_and_cover_the_data_once(count, drop_last):
    images, labels = numbered(count)
    loaders = [
        ResidentLoader(images, labels, 8, train=True, drop_last=drop_last, seed=5, process_index=rank, num_processes=2)
        for rank in (0, 1)
    ]
    seen_orders = []
    for epoch in (0, 1):
        shards = []
        for loader in loaders:
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader) == len(loaders[0])
            assert all(torch.equal(torch.tensor(index_of(x)), y) for x, y in batches)
            shards.append([i for x, _ in batches for i in index_of(x)])
        assert len(shards[0]) == len(shards[1])
        if drop_last:
            assert not set(shards[0]) & set(shards[1])
            assert len(set(shards[0] + shards[1])) == len(shards[0]) * 2 == count // 16 * 16
        else:  # every sample once; wrapping around repeats as few as needed for equal shards
            assert set(shards[0] + shards[1]) == set(range(count))
            assert len(shards[0] + shards[1]) == count + count % 2
        seen_orders.append(shards)
    assert seen_orders[0] != seen_orders[1]
    loaders[0].set_epoch(0)
    assert [i for x, _ in loaders[0] for i in index_of(x)] == seen_orders[0][0]  # (seed, epoch) fixes the order


@pytest.mark.parametrize(("count", "processes", "batch_size"), [(50, 2, 8), (20, 3, 8), (7, 4, 2), (2, 3, 4)])
def test_eval_shards_pad_with_minus_one_and_give_every_process_the_same_batches(count, processes, batch_size):
    images, labels = numbered(count)
    shards = [
        list(ResidentLoader(images, labels, batch_size, train=False, process_index=rank, num_processes=processes))
        for rank in range(processes)
    ]
    assert len({len(shard) for shard in shards}) == 1
    for step in zip(*shards, strict=True):
        assert len({len(y) for _, y in step}) == 1  # gather_for_metrics sees the same size from everyone
    gathered = torch.cat([y for shard in shards for _, y in shard])
    assert sorted(gathered[gathered >= 0].tolist()) == list(range(count))
    assert int((gathered == -1).sum()) == len(gathered) - count < processes
    assert set(gathered[gathered < 0].tolist()) <= {-1}


def test_skip_first_batches_resumes_an_epoch_with_the_same_batches():
    images, labels = numbered(64)
    loader = ResidentLoader(images, labels, 8, train=True, seed=1, augmentation="crop_flip", crop_padding=2)
    loader.set_epoch(4)
    whole = list(loader)
    loader.set_epoch(4)
    resumed = list(loader.skip_first_batches(3))
    assert len(resumed) == len(whole) - 3
    for (x, y), (x_whole, y_whole) in zip(resumed, whole[3:], strict=True):
        assert torch.equal(x, x_whole) and torch.equal(y, y_whole)


def test_accumulate_closes_the_window_at_the_end_of_each_epoch():
    """As with a prepared DataLoader: a partial last window is an update of its own, not carried over."""
    accelerator = Accelerator(gradient_accumulation_steps=3, cpu=True)
    model = accelerator.prepare(torch.nn.Linear(1, 1))
    loader = ResidentLoader(*numbered(32), 8, train=True, drop_last=True)
    syncs = []
    for _ in range(2):
        for _batch in loader:
            with accelerator.accumulate(model):
                pass
            syncs.append(accelerator.sync_gradients)
    assert syncs == [False, False, True, True] * 2


# ---- augmentation: the stream path's distributions ---------------------------------------------------------------


def test_crop_flip_crops_are_exact_and_distributed_as_the_stream_paths(coordinates, coordinates_decoded):
    (stream_images, stream_labels), (images, labels) = both_paths(coordinates, coordinates_decoded, "crop_flip")
    assert images.dtype == torch.uint8
    padded = {s: np.pad(coordinate_image(s), ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect") for s in range(SOURCES)}
    draws = {}
    for name, (out, sources) in {"stream": (stream_images, stream_labels), "resident": (images, labels)}.items():
        top, left, flipped = read_crop_flip(out)
        for k in range(len(out)):  # every output is exactly a reflect-padded crop of its source, maybe mirrored
            crop = padded[int(sources[k])][top[k] : top[k] + SIZE, left[k] : left[k] + SIZE]
            assert np.array_equal(out[k].permute(1, 2, 0).numpy(), crop[:, ::-1] if flipped[k] else crop)
        assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / len(out))
        for offsets in (top, left, top * 9 + left):
            counts = np.bincount(offsets, minlength=offsets.max() + 1)
            assert len(counts) in (9, 81) and stats.chisquare(counts).pvalue > 1e-3  # uniform offsets in [0, 2 * PAD]
        draws[name] = (top, left, flipped)
    for a, b in zip(draws["stream"], draws["resident"], strict=True):
        values = int(max(a.max(), b.max())) + 1
        table = np.stack([np.bincount(a.astype(int), minlength=values), np.bincount(b.astype(int), minlength=values)])
        assert stats.chi2_contingency(table).pvalue > 1e-3  # the two paths draw alike


@pytest.mark.parametrize("input_size", [SIZE, 48])
def test_resized_crop_boxes_are_distributed_as_the_stream_paths(coordinates, coordinates_decoded, input_size):
    (stream_images, _), (images, _) = both_paths(coordinates, coordinates_decoded, "resized_crop", input_size)
    assert images.dtype == torch.float32 and images.shape[-1] == input_size
    stream, resident = read_boxes(stream_images), read_boxes(images)
    # The resident path samples in float: its boxes read back as whole pixels, so its geometry is not even a
    # fraction of a pixel off. The stream path's uint8 rounding (1/16 px in red and green) moves them < 0.2 px.
    assert np.abs(resident - np.rint(resident)).max() < 0.01
    assert np.abs(stream - np.rint(stream)).max() < 0.2
    stream, resident = np.rint(stream).astype(int), np.rint(resident).astype(int)
    for boxes in (stream, resident):
        top, left, height, width, flipped = boxes.T
        area = height * width / SIZE**2
        assert (top >= 0).all() and (left >= 0).all() and (top + height <= SIZE).all() and (left + width <= SIZE).all()
        assert area.min() >= RESIZED_CROP_SCALE[0] - 0.02 and area.max() <= 1
        assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / len(boxes))
    for column in range(4):  # top, left, height, width
        assert stats.ks_2samp(stream[:, column], resident[:, column], method="asymp").pvalue > 1e-3


@pytest.mark.parametrize(
    ("augmentation", "input_size"), [("crop_flip", SIZE), ("resized_crop", SIZE), ("resized_crop", 48)]
)
def test_the_mean_augmented_image_matches_the_stream_paths(coordinates, coordinates_decoded, augmentation, input_size):
    """Per pixel, the mean over an epoch of augmented images agrees between the paths within sampling error."""
    (stream_images, _), (images, _) = both_paths(coordinates, coordinates_decoded, augmentation, input_size)
    a, b = stream_images.double(), images.double()
    error = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b) + 0.25 / len(a))  # + rounding of the stream's uint8
    z = (a.mean(0) - b.mean(0)) / error
    assert z.abs().max() < 5


# Not magnitude 20: its shear of exactly 0.2 puts source points on pixel borders, where PIL (accumulating the
# coordinate along each row) and the device path (exact coordinate) pick neighbouring pixels (data.policies).
POLICIES = [Policy("trivial_augment"), Policy("rand_augment", magnitude=9), Policy("rand_augment", magnitude=15)]


def image_statistics(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: mean, spread, share of black pixels (the geometric ops' fill) and of saturated ones, and how far
    red and green (8y and 8x of the source pixel) are from the identity's (the geometric ops' displacement)."""
    pixels = images.double()
    rows, columns = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    return {
        "mean": pixels.mean(dim=(1, 2, 3)).numpy(),
        "std": pixels.std(dim=(1, 2, 3)).numpy(),
        "black": (pixels.sum(dim=1) == 0).double().mean(dim=(1, 2)).numpy(),
        "white": (pixels == 255).double().mean(dim=(1, 2, 3)).numpy(),
        "blue": pixels[:, 2].mean(dim=(1, 2)).numpy(),
        "displacement": ((pixels[:, 0] - (8 * rows + 4)).abs() + (pixels[:, 1] - (8 * columns + 4)).abs())
        .mean(dim=(1, 2))
        .numpy(),
    }


@pytest.mark.parametrize("policy", POLICIES, ids=lambda policy: f"{policy.name}-m{policy.magnitude}")
def test_policies_are_distributed_as_the_stream_paths(coordinates, coordinates_decoded, policy):
    """torchvision's policy per PIL image (stream) and the per-image batch ops on the device (resident): the same
    distributions of what the ops change (brightness, spread, fill, saturation, colour, displacement)."""
    (stream_images, _), (images, _) = both_paths(coordinates, coordinates_decoded, "crop_flip", policy=policy)
    plain, _ = stream_epoch(coordinates, make_transform(True, "crop_flip", SIZE, SIZE, PAD), 256, shuffle=True)
    stream, resident, unaugmented = image_statistics(stream_images), image_statistics(images), image_statistics(plain)
    for name in stream:
        assert stats.ks_2samp(stream[name], resident[name], method="asymp").pvalue > 1e-3, name
    # and the policy does something: the distribution moved away from crop_flip alone
    assert stats.ks_2samp(stream["displacement"], unaugmented["displacement"], method="asymp").pvalue < 1e-6


def test_a_stream_policy_is_seeded_by_the_samples_generator_and_leaves_the_global_one_alone(coordinates):
    transform = make_transform(True, "crop_flip", SIZE, SIZE, PAD, policy=Policy("trivial_augment"))
    image = coordinates.cast_column("image", datasets.Image())[5]["image"]
    state = torch.get_rng_state()
    outputs = [transform(image, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2, 3, 4, 5)]
    assert torch.equal(outputs[0], outputs[1])
    assert any(not torch.equal(outputs[0], other) for other in outputs[2:])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(("height", "width"), [(32, 32), (5, 5)])
def test_batched_resized_crop_boxes_follow_torchvisions_get_params(height, width):
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    reference = np.array(
        [RandomResizedCrop.get_params(image, list(RESIZED_CROP_SCALE), list(RESIZED_CROP_RATIO)) for _ in range(4000)]
    )
    ours = draw_resized_crop_boxes(4000, height, width, torch.Generator().manual_seed(0)).numpy()
    for column in range(4):  # top, left, height, width
        assert stats.ks_2samp(reference[:, column], ours[:, column], method="asymp").pvalue > 1e-3


def test_resizing_for_a_pretrained_backbone_matches_pil(bundle, tmp_path):
    """Bilinear agrees with PIL up to PIL's rounding; bicubic on average (PIL clips to uint8 between its two
    passes), where torch's plain bicubic kernel (a = -0.75) would be off by about 4 levels on average."""
    images, _ = decode_split(bundle.validation, SIZE, tmp_path)
    for input_size, interpolation in ((64, "bilinear"), (24, "bilinear"), (224, "bicubic"), (24, "bicubic")):
        stream, _ = stream_epoch(bundle.validation, make_transform(False, "none", input_size, SIZE, 4, interpolation))
        loader = ResidentLoader(
            images, torch.zeros(len(images)), 32, train=False, input_size=input_size, interpolation=interpolation
        )
        resident, _ = resident_epoch(loader)
        assert resident.dtype == torch.float32 and resident.shape == stream.shape
        difference = (resident - stream.float()).abs()
        if interpolation == "bilinear":
            assert difference.max() <= 1.0, (input_size, difference.max())
        assert difference.mean() < 0.5, (input_size, interpolation, difference.mean())


# ---- choosing the path -------------------------------------------------------------------------------------------


def test_auto_picks_resident_only_within_the_memory_budget(bundle, caplog):
    needed_gib = len(bundle.train) * 3 * SIZE * SIZE / 2**30
    assert fits_in_memory(bundle.train, SIZE, needed_gib) and not fits_in_memory(bundle.train, SIZE, needed_gib * 0.99)
    caplog.set_level(logging.INFO, logger="accel_recipes.data.resident")
    big = make_args({"data_pipeline": "auto", "resident_memory_budget_gb": needed_gib}).data
    small = make_args({"data_pipeline": "auto", "resident_memory_budget_gb": needed_gib / 2}).data
    assert choose_pipeline(big, bundle.train, SIZE) == "resident"
    assert choose_pipeline(small, bundle.train, SIZE) == "stream"
    assert "180 train images at 32 px" in caplog.text and "-> stream" in caplog.text
    for forced in ("stream", "resident"):
        assert (
            choose_pipeline(make_args({"data_pipeline": forced, "resident_memory_budget_gb": 0}).data, bundle.train, 32)
            == forced
        )
