"""Per-sample transforms (uint8 RGB CHW out, no normalisation) and the DataLoader built around them."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from datagen import make_images
from PIL import Image

from accel_recipes.config import TrainingArguments, make_args
from accel_recipes.data import DataError, make_dataloader, make_transform, resolve_augmentation


def picture(mode: str = "RGB", size: int = 32, seed: int = 0) -> Image.Image:
    array = make_images(np.array([seed % 3]), 3, size=size, channels={"L": 1, "RGB": 3, "RGBA": 4}[mode], seed=seed)[0]
    return Image.fromarray(array, mode=mode)


def small_dataset(count: int = 20, size: int = 32) -> datasets.Dataset:
    labels = np.arange(count) % 4
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))})
    return datasets.Dataset.from_dict(
        {"image": list(make_images(labels, 4, size=size)), "label": labels.tolist()}, features=features
    )


def loader_args(**overrides) -> TrainingArguments:
    return make_args({"dataloader_pin_memory": False, "seed": 0, **overrides}).training


# ---- transforms --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("augmentation", ["crop_flip", "resized_crop", "none"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_every_transform_gives_uint8_rgb_chw_of_the_input_size(augmentation, mode):
    image = picture("RGB").convert(mode)
    for train in (True, False):
        out = make_transform(train, augmentation, input_size=32, native_size=32)(image)
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
        assert out.is_contiguous()
        big = make_transform(train, augmentation, input_size=48, native_size=32)(image)
        assert big.shape == (3, 48, 48)


def test_grayscale_becomes_three_equal_channels():
    out = make_transform(False, "none", 28, 28)(picture("L", size=28))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_eval_transform_is_the_image_itself_at_native_size_and_deterministic():
    image = picture("RGB")
    transform = make_transform(False, "crop_flip", input_size=32, native_size=32)
    out = transform(image)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), np.asarray(image))
    assert torch.equal(out, transform(image))


def test_eval_transform_resizes_small_images_for_pretrained_backbones():
    out = make_transform(False, "resized_crop", input_size=224, native_size=32)(picture("RGB"))
    assert out.shape == (3, 224, 224)
    assert float(out.float().mean()) == pytest.approx(float(np.asarray(picture("RGB")).mean()), abs=2)


def test_crop_flip_changes_images_but_keeps_their_distribution():
    torch.manual_seed(0)
    image = picture("RGB")
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    transform = make_transform(True, "crop_flip", input_size=32, native_size=32, crop_padding=4)
    outs = [transform(image) for _ in range(64)]
    changed = sum(not torch.equal(out, original) for out in outs)
    assert changed > 48  # 1/81 offsets x 1/2 flips leave an image unchanged
    flipped = make_transform(True, "crop_flip", input_size=32, native_size=32, crop_padding=0)
    assert any(torch.equal(flipped(image), original.flip(-1)) for _ in range(16))  # padding 0: flip only
    mean = torch.stack(outs).float().mean((0, 2, 3))
    assert torch.allclose(mean, original.float().mean((1, 2)), atol=4)


def test_resized_crop_is_random_and_seeded_by_torch():
    image = picture("RGB")
    transform = make_transform(True, "resized_crop", input_size=32, native_size=32)
    torch.manual_seed(5)
    first = [transform(image) for _ in range(4)]
    torch.manual_seed(5)
    second = [transform(image) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])


def test_transform_survives_pickling():
    transform = make_transform(True, "crop_flip", 32, 32)
    assert pickle.loads(pickle.dumps(transform)) == transform


def test_transform_arguments_are_checked():
    with pytest.raises(DataError, match="augmentation must be one of"):
        make_transform(True, "mixup", 32, 32)
    with pytest.raises(DataError, match="interpolation must be one of"):
        make_transform(True, "none", 32, 32, interpolation="cubic")


@pytest.mark.parametrize(
    ("augmentation", "pretrained", "input_size", "expected"),
    [
        ("auto", False, 32, "crop_flip"),
        ("auto", True, 32, "resized_crop"),
        ("auto", False, 224, "resized_crop"),
        ("none", True, 224, "none"),
        ("crop_flip", True, 224, "crop_flip"),
    ],
)
def test_resolve_augmentation(augmentation, pretrained, input_size, expected):
    args = SimpleNamespace(augmentation=augmentation)
    assert resolve_augmentation(args, pretrained=pretrained, input_size=input_size, native_size=32) == expected


# ---- loaders -----------------------------------------------------------------------------------------------------


def test_loader_yields_uint8_images_and_int64_labels():
    dataset = small_dataset(10)
    loader = make_dataloader(dataset, make_transform(False, "none", 32, 32), 4, shuffle=False, training=loader_args())
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 3]
    dropped = make_dataloader(dataset, make_transform(False, "none", 32, 32), 4, False, loader_args(), drop_last=True)
    assert len(list(dropped)) == 2


def test_shuffled_order_repeats_for_a_seed_and_changes_with_it():
    dataset = small_dataset(20)
    transform = make_transform(False, "none", 32, 32)

    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader = make_dataloader(dataset, transform, 5, shuffle=True, training=loader_args(seed=seed))
        images, labels = zip(*list(loader), strict=True)
        return torch.cat(images), torch.cat(labels)

    images, labels = epoch(1)
    assert torch.equal(images, epoch(1)[0])
    assert not torch.equal(images, epoch(2)[0])
    assert sorted(labels.tolist()) == sorted((np.arange(20) % 4).tolist())  # every row once
    assert labels.tolist() != (np.arange(20) % 4).tolist()  # shuffled


def test_loader_with_two_workers_is_reproducible():
    dataset = small_dataset(16)
    transform = make_transform(True, "crop_flip", 32, 32)
    args = loader_args(dataloader_num_workers=2, dataloader_prefetch_factor=2, dataloader_persistent_workers=True)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        loader = make_dataloader(dataset, transform, 4, shuffle=True, training=args)
        assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 2
        images, labels = zip(*list(loader), strict=True)
        return torch.cat(images), torch.cat(labels)

    (images_a, labels_a), (images_b, labels_b) = run(), run()
    assert images_a.shape == (16, 3, 32, 32) and images_a.dtype == torch.uint8
    assert torch.equal(labels_a, labels_b) and torch.equal(images_a, images_b)  # same order, same augmentation


def test_loader_options_only_apply_with_workers():
    args = loader_args(dataloader_num_workers=0, dataloader_prefetch_factor=4, dataloader_persistent_workers=True)
    loader = make_dataloader(small_dataset(4), make_transform(False, "none", 32, 32), 2, False, args)
    assert loader.num_workers == 0 and not loader.persistent_workers and loader.prefetch_factor is None
    assert not loader.pin_memory


def test_resized_crop_box_draws_exactly_torchvisions_boxes_from_a_generator():
    from torchvision.transforms import RandomResizedCrop

    from accel_recipes.data.transforms import RESIZED_CROP_RATIO, RESIZED_CROP_SCALE, resized_crop_box

    image = Image.new("RGB", (40, 32))
    torch.manual_seed(3)
    scale, ratio = list(RESIZED_CROP_SCALE), list(RESIZED_CROP_RATIO)
    theirs = [RandomResizedCrop.get_params(image, scale, ratio) for _ in range(50)]
    generator = torch.Generator().manual_seed(3)
    ours = [resized_crop_box(32, 40, generator) for _ in range(50)]
    assert [tuple(box) for box in theirs] == ours


# ---- high bit depths and the pixel limit -------------------------------------------------------------------------

GRADIENT = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once: mean 127.5 (clipped: 254.0)


def wide_image_bytes(kind: str) -> bytes:
    """GRADIENT as a 16-bit PNG (I;16), a 32-bit integer TIFF holding 16-bit values (I), or a float TIFF (F)."""
    import io

    array = {
        "I;16": GRADIENT.astype(np.uint16) * 257,
        "I": GRADIENT.astype(np.int32) * 257,
        "F": GRADIENT.astype(np.float32) / 255,
    }[kind]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG" if kind == "I;16" else "TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["I;16", "I", "F"])
def test_wide_images_are_scaled_to_8_bits_on_both_paths_and_in_predict(kind, tmp_path):
    from accel_recipes.data.resident import decode_images
    from accel_recipes.data.transforms import decode_image, to_rgb
    from accel_recipes.predict import read_image

    encoded = wide_image_bytes(kind)
    decoded = decode_image({"bytes": encoded, "path": None})
    assert decoded.mode == kind
    expected = np.repeat(GRADIENT[None], 3, axis=0)
    stream = make_transform(False, "none", 16, 16)(decoded)
    assert stream.float().mean().item() == pytest.approx(127.5)
    assert np.array_equal(stream.numpy(), expected)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": [{"bytes": encoded, "path": None}], "label": [0]}, features=features)
    resident, bad, _ = decode_images(table, 16)
    assert len(bad) == 0 and np.array_equal(resident[0].numpy(), expected)
    file = tmp_path / ("wide.png" if kind == "I;16" else "wide.tiff")
    file.write_bytes(encoded)
    assert np.array_equal(np.asarray(read_image(file)), np.asarray(to_rgb(decoded)))


def test_full_scale_32_bit_integers_are_scaled_by_the_32_bit_range():
    from accel_recipes.data.transforms import to_rgb

    array = np.array([[-5, 2**31 - 1]], dtype=np.int32)
    assert np.asarray(to_rgb(Image.fromarray(array)))[..., 0].tolist() == [[0, 255]]


def test_an_image_over_the_pixel_limit_is_undecodable_and_named(monkeypatch):
    import io

    from accel_recipes.data.transforms import decode_image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,200 pixels is over it, below PIL's own 2x error
    with pytest.raises(DataError, match=r"cannot decode image big.png: 40 x 30 = 1,200 pixels, over PIL's limit"):
        decode_image({"bytes": buffer.getvalue(), "path": "big.png"})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)
    assert decode_image({"bytes": buffer.getvalue(), "path": "big.png"}).size == (40, 30)
