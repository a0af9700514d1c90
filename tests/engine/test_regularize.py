"""EMA of the weights, mixup / cutmix and random erasing as the engine applies them (``engine.regularize``, through
``TrainingStep``): the EMA follows timm's formula once per optimizer update and resumes bitwise; mixed targets are
distributions whose coefficient follows Beta(alpha, alpha) and whose cutmix share is the box's area; erasing hits
the stated share of images after normalisation."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator
from scipy import stats
from test_step import make_problem, spec_of  # tests/engine is on the path (rootdir import mode)
from torch.utils.data import DataLoader, TensorDataset

from accel_recipes.checkpoints import RunState, require_same_ema, restore_checkpoint, save_checkpoint
from accel_recipes.config import make_args
from accel_recipes.engine import TrainingStep
from accel_recipes.engine.regularize import BatchRegularizer
from accel_recipes.errors import TrainingError

CLASSES = 3


def make_step(k: int = 1, batch: int = 4, micro_batches: int = 8, **fields) -> tuple[TrainingStep, DataLoader]:
    images, labels, model = make_problem(batch * micro_batches)
    training = make_args(
        {
            "gradient_accumulation_steps": k,
            "per_device_train_batch_size": batch,
            "num_train_epochs": 1,
            "learning_rate": 0.5,
            "mixed_precision": "no",
            **fields,
        }
    ).training
    accelerator = Accelerator(gradient_accumulation_steps=k, cpu=True, step_scheduler_with_optimizer=False)
    loader = accelerator.prepare(DataLoader(TensorDataset(images, labels), batch_size=batch))
    return TrainingStep(training, spec_of(model), accelerator, micro_batches, num_classes=CLASSES), loader


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def train(step: TrainingStep, loader: DataLoader, on_micro_batch=None) -> int:
    updates = 0
    for micro_index, (images, labels) in enumerate(loader):
        step.micro_batch(images, labels, micro_index)
        if step.accelerator.sync_gradients:
            updates += 1
            step.after_update(updates)
        if on_micro_batch is not None:
            on_micro_batch(updates)
    return updates


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_follows_timms_formula_once_per_optimizer_update(warmup):
    decay = 0.9
    step, loader = make_step(k=2, model_ema=True, model_ema_decay=decay, model_ema_warmup=warmup)
    live = step.accelerator.unwrap_model(step.model)
    expected = weights(live)
    seen_updates = []

    def check(updates: int) -> None:
        if updates not in seen_updates and step.accelerator.sync_gradients:
            seen_updates.append(updates)
            # timm's ModelEmaV3.get_decay(step=updates): the first update copies the weights, then the decay (with
            # warm-up: 1 - (1 + s) ** -2/3 for s = updates - 1, capped at the decay)
            steps_after_first = updates - 1
            rate = decay if not warmup else min(decay, 1 - (1 + steps_after_first) ** (-2 / 3))
            rate = 0.0 if steps_after_first <= 0 else rate
            for name, value in weights(live).items():
                expected[name] = rate * expected[name] + (1 - rate) * value
        for name, value in weights(step.ema.module).items():  # unchanged inside an accumulation window
            torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)

    assert train(step, loader, check) == 4
    assert seen_updates == [1, 2, 3, 4]
    assert not torch.equal(weights(step.ema.module)["1.weight"], weights(live)["1.weight"])


def test_ema_state_resumes_bitwise_from_a_checkpoint(tmp_path):
    step, loader = make_step(model_ema=True, model_ema_decay=0.5)
    train(step, loader)
    state = RunState(update=8, num_classes=CLASSES)
    checkpoint = save_checkpoint(step.accelerator, tmp_path / "checkpoints", state, limit=None)
    saved_ema = weights(step.ema.module)

    fresh, _ = make_step(model_ema=True, model_ema_decay=0.5)
    assert not all(torch.equal(fresh.ema.module.state_dict()[n], v) for n, v in saved_ema.items())
    restore_checkpoint(fresh.accelerator, checkpoint, CLASSES, "tiny")
    restored = weights(fresh.ema.module)
    assert restored.keys() == saved_ema.keys()
    assert all(torch.equal(restored[name], saved_ema[name]) for name in saved_ema)


@pytest.mark.parametrize("saved_with_ema", [True, False])
def test_resuming_with_ema_switched_is_an_error_naming_the_setting(tmp_path, saved_with_ema):
    step, loader = make_step(model_ema=saved_with_ema)
    train(step, loader)
    state = RunState(update=8, num_classes=CLASSES, model_ema=saved_with_ema)
    checkpoint = save_checkpoint(step.accelerator, tmp_path / "checkpoints", state, limit=None)
    with pytest.raises(TrainingError) as error:
        require_same_ema(checkpoint, model_ema=not saved_with_ema)
    assert f"resume with --model_ema {str(saved_with_ema).lower()}" in str(error.value)
    assert str(checkpoint) in str(error.value)


def regularizer(**fields) -> BatchRegularizer:
    training = make_args({"per_device_train_batch_size": 8, **fields}).training
    return BatchRegularizer(training, CLASSES, torch.device("cpu"))


def paired_batch(count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i constant i (so every pixel names its source); labels 0 for the first half, 1 for the second, so
    timm's pairing of i with N-1-i always mixes a 0 with a 1."""
    images = torch.arange(count, dtype=torch.float32)[:, None, None, None].expand(count, 3, 16, 16).clone()
    labels = torch.tensor([0] * (count // 2) + [1] * (count - count // 2))
    return images, labels


def test_mixup_targets_are_distributions_with_smoothing_folded_in():
    mix = regularizer(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing_factor=0.1)
    for micro_index in range(20):
        images, labels = paired_batch()
        _, targets = mix(images, labels, 0, micro_index, 0)
        assert targets.shape == (8, CLASSES)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
        torch.testing.assert_close(targets[:, 2], torch.full((8,), 0.1 / CLASSES))  # the unused class: smoothing only


def test_mixup_coefficient_follows_beta_alpha_alpha():
    alpha = 0.4
    mix = regularizer(mixup_alpha=alpha)
    draws = []
    for micro_index in range(400):
        images, labels = paired_batch()
        mixed, targets = mix(images.clone(), labels, 0, micro_index, 0)
        lam = targets[0, 0].item()  # sample 0 (label 0) keeps lam of itself
        draws.append(lam)
        torch.testing.assert_close(mixed[0], lam * images[0] + (1 - lam) * images[7])
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_cutmix_box_covers_the_share_its_target_states():
    mix = regularizer(cutmix_alpha=1.0)
    for micro_index in range(50):
        images, labels = paired_batch()
        mixed, targets = mix(images, labels, 0, micro_index, 0)
        for i in range(8):
            partner = 7 - i
            pasted = (mixed[i] == partner).float().mean().item()
            own_label = labels[i].item()
            assert pasted == pytest.approx(1 - targets[i, own_label].item(), abs=1e-6)


def test_odd_micro_batch_leaves_the_last_image_unmixed():
    mix = regularizer(mixup_alpha=1.0, label_smoothing_factor=0.1)
    images, labels = paired_batch(7)
    original = images.clone()
    mixed, targets = mix(images, labels, 0, 3, 0)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(7))
    torch.testing.assert_close(mixed[6], original[6])
    assert targets[6].argmax().item() == labels[6].item() and targets[6].max().item() == pytest.approx(0.9 + 0.1 / 3)


def test_erasing_hits_the_stated_share_of_images_with_noise_and_is_seeded_per_micro_batch():
    probability = 0.3
    erase = regularizer(random_erasing=probability)
    erased = 0
    for micro_index in range(100):
        images = torch.full((8, 3, 16, 16), 7.0)
        out, labels = erase(images, torch.zeros(8, dtype=torch.long), 0, micro_index, 0)
        assert labels.ndim == 1  # no mixup: hard labels
        changed = (out != 7.0).flatten(1).any(dim=1)
        erased += int(changed.sum())
        noise = out[out != 7.0]
        if noise.numel() > 100:
            assert abs(noise.mean().item()) < 0.5 and 0.5 < noise.std().item() < 1.5  # N(0, 1), normalised space
    share = erased / 800
    assert abs(share - probability) < 3 * (probability * (1 - probability) / 800) ** 0.5

    def once(*keys: int) -> torch.Tensor:
        return erase(torch.full((8, 3, 16, 16), 7.0), torch.zeros(8, dtype=torch.long), *keys)[0]

    state = torch.get_rng_state()
    assert torch.equal(once(0, 5, 0), once(0, 5, 0))  # the same micro-batch draws the same boxes
    assert not torch.equal(once(0, 5, 0), once(0, 5, 1))  # another process draws its own
    assert torch.equal(torch.get_rng_state(), state)  # and the global generator is left as it was


def test_mixup_trains_on_soft_targets_through_the_step():
    step, loader = make_step(k=2, mixup_alpha=1.0, cutmix_alpha=1.0, random_erasing=0.5)
    before = copy.deepcopy(weights(step.accelerator.unwrap_model(step.model)))
    assert train(step, loader) == 4
    after = weights(step.accelerator.unwrap_model(step.model))
    assert any(not torch.equal(before[name], after[name]) for name in before)
