"""EMA of the weights, mixup / cutmix and random erasing as the engine applies them (``engine.regularize``, in the
real training loop on a tiny MLP, ``loop_harness``): the EMA follows timm's formula once per optimizer update and
resumes bitwise; mixed targets are distributions whose coefficient follows Beta(alpha, alpha) and whose cutmix share
is the box's area; erasing hits the stated share of images after normalisation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from loop_harness import (  # tests/engine is on the path (rootdir import mode)
    CLASSES,
    live_weights,
    make_data,
    make_trainer,
    same_weights,
    tiny_run_environment,
    training_args,
    weights,
)
from scipy import stats

from accel_recipes.checkpoints import list_checkpoints, require_same_ema
from accel_recipes.config import make_args
from accel_recipes.engine.regularize import BatchRegularizer
from accel_recipes.errors import TrainingError

MICRO_BATCHES = 8  # one epoch of the runs below


@pytest.fixture(scope="module", autouse=True)
def environment() -> Iterator[None]:
    with tiny_run_environment():
        yield


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_follows_timms_formula_once_per_optimizer_update(tmp_path, warmup):
    """Before every micro-batch of a run with k = 2, and after the run, the EMA is timm's average of the live
    weights after each update so far: it moves once per update, never inside an accumulation window."""
    decay = 0.9
    training = training_args(
        tmp_path,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        model_ema=True,
        model_ema_decay=decay,
        model_ema_warmup=warmup,
    )
    seen: list[tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (updates, live, EMA)

    def on_batch(epoch: int, index: int, batch: Any) -> None:
        seen.append((trainer.state.update, live_weights(trainer), weights(trainer.step.ema.module)))

    trainer = make_trainer(training, make_data(MICRO_BATCHES), on_batch=on_batch)
    result = trainer.fit()
    seen.append((result.metrics["train_updates"], live_weights(trainer), weights(trainer.step.ema.module)))

    assert result.metrics["train_updates"] == 4
    expected = dict(seen[0][1])  # the EMA starts as a copy of the initial weights
    seen_updates = []
    for updates, live, ema in seen:
        if updates not in seen_updates and updates > 0:
            seen_updates.append(updates)
            # timm's ModelEmaV3.get_decay(step=updates): the first update copies the weights, then the decay (with
            # warm-up: 1 - (1 + s) ** -2/3 for s = updates - 1, capped at the decay)
            steps_after_first = updates - 1
            rate = decay if not warmup else min(decay, 1 - (1 + steps_after_first) ** (-2 / 3))
            rate = 0.0 if steps_after_first <= 0 else rate
            for name, value in live.items():
                expected[name] = rate * expected[name] + (1 - rate) * value
        for name, value in ema.items():  # unchanged inside an accumulation window
            torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)
    assert seen_updates == [1, 2, 3, 4]
    assert [updates for updates, _, _ in seen] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert not torch.equal(seen[-1][2]["1.weight"], seen[-1][1]["1.weight"])


def test_ema_state_resumes_bitwise_from_a_checkpoint(tmp_path):
    """The EMA a checkpoint was saved with is the one a resumed Trainer holds, bit for bit, and the resumed run
    ends with the uninterrupted run's EMA."""
    fields = {"model_ema": True, "model_ema_decay": 0.5, "num_train_epochs": 1, "save_strategy": "steps"}
    data = make_data(MICRO_BATCHES)
    saved: dict[str, dict[str, torch.Tensor]] = {}

    def keep_ema(checkpoint: Path) -> None:
        saved[checkpoint.name] = weights(first.step.ema.module)

    first = make_trainer(training_args(tmp_path / "first", save_steps=4, **fields), data, on_checkpoint=keep_ema)
    first.fit()
    assert sorted(saved) == ["checkpoint-4", "checkpoint-8"]

    resumed = make_trainer(training_args(tmp_path / "resumed", save_steps=4, **fields), data)
    assert not same_weights(weights(resumed.step.ema.module), saved["checkpoint-4"])
    resumed.resume(tmp_path / "first" / "checkpoints" / "checkpoint-4")
    assert same_weights(weights(resumed.step.ema.module), saved["checkpoint-4"])
    resumed.fit()
    assert same_weights(weights(resumed.step.ema.module), weights(first.step.ema.module))


@pytest.mark.parametrize("saved_with_ema", [True, False])
def test_resuming_with_ema_switched_is_an_error_naming_the_setting(tmp_path, saved_with_ema):
    training = training_args(tmp_path, model_ema=saved_with_ema, num_train_epochs=1, save_strategy="epoch")
    make_trainer(training, make_data(MICRO_BATCHES)).fit()
    checkpoint = list_checkpoints(tmp_path / "checkpoints")[-1]
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


def test_mixup_trains_on_soft_targets_through_the_loop(tmp_path, monkeypatch):
    """With mixup, cutmix and erasing on, every micro-batch of the loop is scored on soft targets (distributions
    over the classes), and the run's weights move, to other values than the same run without them."""
    targets_seen: list[torch.Tensor] = []
    loss = BatchRegularizer.loss

    def recording_loss(self: BatchRegularizer, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets_seen.append(targets.detach().clone())
        return loss(self, logits, targets)

    data, fields = make_data(MICRO_BATCHES), {"gradient_accumulation_steps": 2, "num_train_epochs": 1}
    plain = make_trainer(training_args(tmp_path / "plain", **fields), data).fit()
    monkeypatch.setattr(BatchRegularizer, "loss", recording_loss)
    regularized = make_trainer(
        training_args(tmp_path / "mixed", mixup_alpha=1.0, cutmix_alpha=1.0, random_erasing=0.5, **fields), data
    )
    before = live_weights(regularized)
    result = regularized.fit()

    assert result.metrics["train_updates"] == 4
    assert len(targets_seen) == MICRO_BATCHES
    for targets in targets_seen:
        assert targets.shape == (4, CLASSES)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(4))
    after = weights(result.model)
    assert not same_weights(before, after)
    assert not same_weights(after, weights(plain.model))
