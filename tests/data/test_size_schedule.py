"""The augmentation value (``Augmentation``: resolved once, handed whole to both data paths), the resolution schedule
(``SizeSchedule``: the size of each update) and the evaluation size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from accel_recipes.config import DataArguments, make_args
from accel_recipes.data import Augmentation, DataError, ImageTransform, ResidentLoader
from accel_recipes.data.augmentation import resolve
from accel_recipes.data.policies import Policy
from accel_recipes.data.size_schedule import SizeSchedule, check_sizes
from accel_recipes.errors import ConfigError


def test_resolve_makes_one_value_of_the_data_arguments_and_the_model_input():
    data = DataArguments(
        augmentation="rand_augment",
        rand_augment_magnitude=5,
        crop_padding=2,
        train_img_sizes=[16, 24, 32],
        eval_image_size=40,
    )
    augment = resolve(data, input_size=32, interpolation="bicubic", pretrained=False, native_size=32)
    assert augment == Augmentation(
        augmentation="crop_flip",  # auto's crop, then the policy
        input_size=32,
        native_size=32,
        crop_padding=2,
        interpolation="bicubic",
        policy=Policy("rand_augment", 5, 2),
        eval_size=40,
        train_img_sizes=(16, 24, 32),
        train_size_schedule="progressive",
    )
    with pytest.raises(AttributeError):  # frozen: no path can change what the other sees
        augment.input_size = 16
    assert (augment.size(train=True), augment.size(train=False), augment.eval_input_size) == (32, 40, 40)
    assert resolve(DataArguments(), 32, "bilinear", False, 32).eval_input_size == 32  # unset: the training size


def test_bad_augmentation_values_are_one_line_data_errors():
    for fields, message in [
        ({"augmentation": "mixup"}, "augmentation must be one of"),
        ({"interpolation": "cubic"}, "interpolation must be one of"),
        ({"eval_size": 0}, "eval_image_size must be a positive"),
        ({"crop_padding": -1}, "crop_padding must be 0 or more"),
    ]:
        with pytest.raises(DataError, match=message):
            Augmentation(**{"augmentation": "none", "input_size": 32, **fields})


def test_both_paths_make_evaluation_images_at_the_eval_size_and_training_images_at_the_input_size():
    augment = Augmentation("crop_flip", input_size=16, native_size=16, eval_size=24)
    picture = Image.fromarray(torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8).numpy())
    assert ImageTransform(True, augment)(picture).shape == (3, 16, 16)
    stream_eval = ImageTransform(False, augment)(picture)
    assert stream_eval.shape == (3, 24, 24)

    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(4)
    resident_train = next(iter(ResidentLoader(images, labels, 4, train=True, augment=augment)))[0]
    resident_eval = next(iter(ResidentLoader(images, labels, 4, train=False, augment=augment)))[0]
    assert resident_train.shape == (4, 3, 16, 16) and resident_eval.shape == (4, 3, 24, 24)
    with pytest.raises(TypeError, match="either augment or its fields"):
        ResidentLoader(images, labels, 4, train=True, augment=augment, crop_padding=2)


def test_progressive_trains_equal_phases_smallest_first_and_ends_at_the_input_size():
    schedule = SizeSchedule((16, 24, 32), "progressive", total_updates=10)
    sizes = [schedule.size_at(update) for update in range(10)]
    assert sizes == [16] * 4 + [24] * 3 + [32] * 3
    assert [list(schedule.phase_updates(phase)) for phase in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert schedule.size_at(10) == 32  # past the plan (a resumed run with more updates): the input size
    with pytest.raises(ConfigError, match=r"3 sizes \[16, 24, 32\] needs at least one update per size"):
        SizeSchedule((16, 24, 32), "progressive", total_updates=2)  # it would end at 24


def test_constant_draws_each_updates_size_from_the_seed_and_the_update_alone():
    schedule = SizeSchedule((16, 24, 32), "constant", total_updates=300, seed=7)
    sizes = [schedule.size_at(update) for update in range(300)]
    assert sizes == [SizeSchedule((16, 24, 32), "constant", 300, seed=7).size_at(u) for u in range(300)]
    assert all(sizes.count(size) > 60 for size in (16, 24, 32))  # uniform: about 100 each
    assert sizes != [SizeSchedule((16, 24, 32), "constant", 300, seed=8).size_at(u) for u in range(300)]


def test_a_batch_is_resized_on_its_device_only_when_its_update_has_another_size():
    schedule = SizeSchedule((8, 16), "progressive", total_updates=2)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    small = schedule.resize(images, update=0)
    assert small.shape == (3, 3, 8, 8) and small.dtype == torch.float32
    assert small.min() >= 0 and small.max() <= 255
    # what the stream path's PIL resize gives the same image (PIL rounds to uint8)
    pil = Image.fromarray(images[0, 0].numpy()).resize((8, 8), Image.Resampling.BILINEAR)
    assert (small[0, 0] - torch.tensor(np.asarray(pil), dtype=torch.float32)).abs().max() <= 1
    assert schedule.resize(images, update=1) is images


def test_the_schedule_must_end_at_the_models_input_size():
    check_sizes(Augmentation("none", input_size=32, train_img_sizes=(16, 32)))
    with pytest.raises(ConfigError, match=r"\[16, 24\] must end at the model's input size 32; append 32"):
        check_sizes(Augmentation("none", input_size=32, train_img_sizes=(16, 24)))
    assert SizeSchedule.of(Augmentation("none", input_size=32), 10, seed=0) is None  # no schedule, no resize


def test_sizes_from_yaml_lists_and_command_line_strings():
    assert make_args({"train_img_sizes": [16, 24, 32]}).data.train_img_sizes == [16, 24, 32]
    assert make_args({"train_img_sizes": "16,24, 32"}).data.train_img_sizes == [16, 24, 32]
    assert make_args({"train_img_sizes": "16 24 32", "eval_image_size": "40"}).data.eval_image_size == 40
    for value, message in [
        ("16,x", "'train_img_sizes' must be an integer, got 'x'"),
        ([], "'train_img_sizes' must be a non-empty list"),
        ("32,16", "smallest first"),
        ("16,16,32", "distinct"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make_args({"train_img_sizes": value})
    with pytest.raises(ConfigError, match="'eval_image_size' must be a positive"):
        make_args({"eval_image_size": 0})
    with pytest.raises(ConfigError, match="'train_size_schedule' must be one of"):
        make_args({"train_size_schedule": "linear"})
