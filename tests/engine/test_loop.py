"""The training loop in process: the real ``Trainer`` (``engine.fit``) on a tiny MLP and in-memory images. Pins the
order and count of updates, training logs, evaluations and checkpoints as the strategies define them, the best
model, ``max_steps``, the stop signal, the non-finite stop, and resuming from a checkpoint (``metrics.jsonl``
truncated so each record is written once, the final weights those of the uninterrupted run).

Every run here has 5 micro-batches an epoch; with ``gradient_accumulation_steps`` 2 an epoch is 3 updates, closed
after micro-batches 2, 4 and 5 (the last window is cut short by the end of the epoch)."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from loop_harness import (  # tests/engine is on the path (rootdir import mode)
    SaveRecorder,
    TinyData,
    kind_of,
    live_weights,
    make_data,
    make_trainer,
    mean_loss,
    metrics_of,
    raised_by,
    run_fit,
    same_weights,
    tiny_run_environment,
    training_args,
    weights,
)

from accel_recipes.checkpoints import RunState, list_checkpoints
from accel_recipes.errors import Preempted, TrainingError
from accel_recipes.results import RESULT_KEYS, TRAINING_KEYS

MICRO_BATCHES = 5
EVAL_KEYS = ("eval_loss", "eval_accuracy", "eval_f1", "eval_samples")


@pytest.fixture(scope="module", autouse=True)
def environment() -> Iterator[None]:
    with tiny_run_environment():
        yield


@pytest.fixture(scope="module")
def data() -> TinyData:
    return make_data(MICRO_BATCHES)


def checkpoint_names(output_dir: Path) -> list[str]:
    return [path.name for path in list_checkpoints(output_dir / "checkpoints")]


def test_steps_strategies_log_evaluate_and_save_in_order(data, tmp_path):
    """logging_steps 4, eval_steps 3, save_steps 2 over 6 updates: at an update, its log comes first, then its
    evaluation, then its checkpoint; the last update is logged whatever logging_steps says, and checkpointed only
    when save_steps divides it; save_total_limit 2 keeps the newest two. Each evaluation reports the weights right
    after its update, and the run ends with the final evaluation of the last weights."""
    output_dir = tmp_path / "run"
    training = training_args(
        output_dir,
        gradient_accumulation_steps=2,
        logging_steps=4,
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=2,
    )
    recorder = SaveRecorder(output_dir)
    after_update: dict[int, dict[str, torch.Tensor]] = {}

    def on_batch(epoch: int, index: int, batch: Any) -> None:
        # the first micro-batch after update u sees the weights update u left (nothing else changes them)
        after_update.setdefault(trainer.state.update, live_weights(trainer))

    trainer = make_trainer(training, data, on_batch=on_batch, on_checkpoint=recorder)
    result = trainer.fit()

    assert recorder.timeline() == [
        ("save", 2),
        ("eval", 3),
        ("log", 4),
        ("save", 4),
        ("log", 6),
        ("eval", 6),
        ("save", 6),
        ("final", 6),
    ]
    assert checkpoint_names(output_dir) == ["checkpoint-4", "checkpoint-6"]
    assert result.metrics["train_updates"] == 6 and result.metrics["epoch"] == 2.0
    records = metrics_of(output_dir)
    after_update[6] = weights(result.model)  # no load_best_model_at_end: the live weights are the last ones
    for record in records:
        if kind_of(record) != "log":
            assert record["eval_loss"] == pytest.approx(mean_loss(after_update[record["step"]], data.validation))
    evaluation_at_6, final = records[-2], records[-1]
    assert {key: final[key] for key in EVAL_KEYS} == {key: evaluation_at_6[key] for key in EVAL_KEYS}


def test_epoch_strategies_evaluate_and_save_each_epoch_and_max_steps_ends_mid_epoch(data, tmp_path):
    """eval_strategy and save_strategy epoch: after each epoch's last update its evaluation, then its checkpoint;
    max_steps 5 stops the run four micro-batches into the second epoch (5 updates, not the 6 of two epochs), and
    that cut epoch is still evaluated and saved. A log's epoch is the share of micro-batches trained."""
    output_dir = tmp_path / "run"
    training = training_args(
        output_dir,
        gradient_accumulation_steps=2,
        num_train_epochs=5,
        max_steps=5,
        logging_steps=2,
        eval_strategy="epoch",
        save_strategy="epoch",
    )
    recorder = SaveRecorder(output_dir)
    result = make_trainer(training, data, on_checkpoint=recorder).fit()

    assert recorder.timeline() == [
        ("log", 2),
        ("eval", 3),
        ("save", 3),
        ("log", 4),
        ("log", 5),
        ("eval", 5),
        ("save", 5),
        ("final", 5),
    ]
    assert result.metrics["train_updates"] == 5
    assert result.metrics["train_samples"] == (MICRO_BATCHES + 4) * training.per_device_train_batch_size
    records = metrics_of(output_dir)
    assert [r["epoch"] for r in records if kind_of(r) == "log"] == [0.8, 1.4, 1.8]  # micro-batches 4/5, 5+2, 5+4
    assert records[1]["epoch"] == 1.0  # the evaluation at the end of the first epoch


def test_each_log_describes_the_update_just_made(data, tmp_path):
    """The log of update u is written after the update's schedule step (linear: 0.5 x (1 - u / 6), the rate the
    next update will use), at the share of the epoch's micro-batches trained so far. (The loss it reports, the
    mean over the update's window, is pinned in test_step.py.)"""
    training = training_args(tmp_path / "run", gradient_accumulation_steps=2)
    make_trainer(training, data).fit()

    logs = [r for r in metrics_of(training.output_dir) if kind_of(r) == "log"]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    assert [r["learning_rate"] for r in logs] == pytest.approx([0.5 * (1 - u / 6) for u in range(1, 7)])
    assert [r["epoch"] for r in logs] == [0.4, 0.8, 1.0, 1.4, 1.8, 2.0]  # windows end after micro-batches 2, 4, 5
    assert all(r["skipped_updates"] == 0 and math.isfinite(r["loss"]) for r in logs)


@pytest.mark.parametrize(("metric", "load_best"), [("loss", True), ("accuracy", True), ("f1", True), ("loss", False)])
def test_the_best_evaluation_is_kept_and_loaded_for_the_final_one(data, tmp_path, metric, load_best):
    """With load_best_model_at_end, the best evaluation by metric_for_best_model (lowest loss, highest accuracy or
    F1; the first of equals) is kept as best_model/model.safetensors and loaded at the end, so the final
    evaluation repeats it; without, nothing is kept and the final evaluation is of the last weights."""
    output_dir = tmp_path / "run"
    training = training_args(
        output_dir,
        num_train_epochs=2,
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=100,
        metric_for_best_model=metric,
        load_best_model_at_end=load_best,
    )
    result = make_trainer(training, data).fit()

    records = metrics_of(output_dir)
    evaluations = [r for r in records if kind_of(r) == "eval"]
    assert [r["step"] for r in evaluations] == list(range(1, 11))
    values = [r[f"eval_{metric}"] for r in evaluations]
    chosen = values.index(min(values) if metric == "loss" else max(values))
    best = evaluations[chosen]
    best_model = output_dir / "best_model" / "model.safetensors"
    final = records[-1]
    if load_best:
        assert best["step"] < 10, "the data should make an earlier evaluation the best (else nothing is tested)"
        assert result.metrics["best_update"] == best["step"]
        assert result.best_model_path == best_model and best_model.is_file()
        assert {key: final[key] for key in EVAL_KEYS} == {key: best[key] for key in EVAL_KEYS}
        assert final["eval_loss"] == pytest.approx(mean_loss(weights(result.model), data.validation))
    else:
        assert result.metrics["best_update"] is None and result.best_model_path is None
        assert not best_model.exists()
        assert {key: final[key] for key in EVAL_KEYS} == {key: evaluations[-1][key] for key in EVAL_KEYS}


def test_an_evaluation_only_as_good_as_the_best_does_not_replace_it(data, tmp_path):
    """A learning rate too small to change any prediction: every evaluation has the same accuracy, so the first
    stays the best (improving means strictly better) and its weights, not the last ones, are evaluated at the end."""
    output_dir = tmp_path / "run"
    training = training_args(
        output_dir,
        learning_rate=1e-4,
        eval_strategy="steps",
        eval_steps=1,
        metric_for_best_model="accuracy",
        load_best_model_at_end=True,
    )
    result = make_trainer(training, data).fit()

    records = metrics_of(output_dir)
    evaluations = [r for r in records if kind_of(r) == "eval"]
    assert len({r["eval_accuracy"] for r in evaluations}) == 1 and len(evaluations) == 10
    assert result.metrics["best_update"] == 1
    assert records[-1]["eval_loss"] == evaluations[0]["eval_loss"] != evaluations[-1]["eval_loss"]


# ---- stop, crash and resume --------------------------------------------------------------------------------------

RESUME_FIELDS: dict[str, Any] = {
    "gradient_accumulation_steps": 2,
    "num_train_epochs": 3,  # 9 updates
    "eval_strategy": "epoch",  # evaluations at updates 3, 6 and 9
    "save_strategy": "steps",
    "save_steps": 2,  # checkpoints at 2, 4 (mid-epoch), 6 (an epoch's last update, before its evaluation) and 8
    "model_ema": True,
    "model_ema_decay": 0.9,
    "mixup_alpha": 0.4,  # drawn per micro-batch: a resumed run must draw the same
    "momentum": 0.9,
}


class Crash(Exception):
    """Stands for the run dying (kill -9, a lost node) between two micro-batches."""


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> dict[str, Any]:
    """The run the resumed ones must repeat: its records (without wall-clock values), last weights and EMA."""
    trainer = make_trainer(training_args(tmp_path_factory.mktemp("uninterrupted"), **RESUME_FIELDS), data)
    result = trainer.fit()
    return {
        "records": metrics_of(trainer.output_dir, without_timing=True),
        "weights": weights(result.model),
        "ema": weights(trainer.step.ema.module),
        "updates": result.metrics["train_updates"],
    }


def resume_and_compare(data: TinyData, output_dir: Path, uninterrupted: dict[str, Any]) -> None:
    """Resume from the newest checkpoint in ``output_dir`` and require the uninterrupted run's records, each once,
    and its last weights and EMA, bit for bit."""
    trainer = make_trainer(training_args(output_dir, **RESUME_FIELDS), data)
    checkpoint = list_checkpoints(output_dir / "checkpoints")[-1]
    trainer.resume(checkpoint)
    result = trainer.fit()
    records = metrics_of(output_dir, without_timing=True)
    events = [(kind_of(r), r["step"]) for r in records]
    assert len(events) == len(set(events)), f"a record was written twice: {events}"
    assert records == uninterrupted["records"]
    assert result.metrics["train_updates"] == uninterrupted["updates"]
    assert same_weights(weights(result.model), uninterrupted["weights"])
    assert same_weights(weights(trainer.step.ema.module), uninterrupted["ema"])


@pytest.mark.parametrize(
    ("crash_at", "resumed_from", "evaluation_dropped"),
    [
        ((1, 4), "checkpoint-4", False),  # mid-epoch: micro-batch 2 of epoch 1 is where the resumed run starts
        ((2, 2), "checkpoint-6", True),  # epoch end: the evaluation at 6 was written after it and is repeated
    ],
)
def test_resume_after_a_crash_writes_each_record_once_and_ends_with_the_same_weights(
    data, tmp_path, uninterrupted, crash_at, resumed_from, evaluation_dropped
):
    """A run killed after writing records past its newest checkpoint resumes from that checkpoint: the records after
    it are dropped from metrics.jsonl (and the epoch-end evaluation the resumed run repeats), then written again,
    and the run ends with the uninterrupted run's records, weights and EMA exactly."""
    output_dir = tmp_path / "run"

    def crash(epoch: int, index: int, batch: Any) -> None:
        if (epoch, index) == crash_at:
            raise Crash

    with pytest.raises(Crash):
        make_trainer(training_args(output_dir, **RESUME_FIELDS), data, on_batch=crash).fit()
    checkpoint = list_checkpoints(output_dir / "checkpoints")[-1]
    assert checkpoint.name == resumed_from
    saved = RunState.from_file(checkpoint / "training_state.json")
    written = metrics_of(output_dir)
    assert max(r["step"] for r in written) > saved.update  # records past the checkpoint: truncation is needed
    at_checkpoint = [kind_of(r) for r in written if r["step"] == saved.update]
    assert ("eval" in at_checkpoint) == evaluation_dropped

    resume_and_compare(data, output_dir, uninterrupted)


def test_fit_resumes_from_the_latest_checkpoint(data, tmp_path, uninterrupted):
    """``engine.fit`` with resume_from_checkpoint latest picks the newest checkpoint and repeats the uninterrupted
    run; with no checkpoint yet it starts from scratch."""
    output_dir = tmp_path / "run"
    fresh = run_fit(training_args(output_dir, resume_from_checkpoint="latest", max_steps=1, **RESUME_FIELDS), data)
    assert fresh.metrics["train_updates"] == 1
    (output_dir / "metrics.jsonl").unlink()

    def crash(epoch: int, index: int, batch: Any) -> None:
        if (epoch, index) == (2, 0):
            raise Crash

    with pytest.raises(Crash):
        run_fit(training_args(output_dir, **RESUME_FIELDS), data, on_batch=crash)
    result = run_fit(training_args(output_dir, resume_from_checkpoint="latest", **RESUME_FIELDS), data)
    assert metrics_of(output_dir, without_timing=True) == uninterrupted["records"]
    assert same_weights(weights(result.model), uninterrupted["weights"])


def test_resuming_from_the_last_updates_checkpoint_repeats_the_evaluation_it_dropped(data, tmp_path):
    """A finished run whose last update (an epoch's end) was checkpointed before that epoch's evaluation, resumed
    from it (a requeued job killed while exporting): the evaluation at that update is dropped from metrics.jsonl
    and written again, once, and the best model is the one the finished run chose."""
    output_dir = tmp_path / "run"
    fields = {
        "gradient_accumulation_steps": 2,
        "eval_strategy": "epoch",
        "save_strategy": "steps",
        "save_steps": 3,
        "load_best_model_at_end": True,
        "metric_for_best_model": "loss",
    }
    finished = run_fit(training_args(output_dir, **fields), data)
    records = metrics_of(output_dir, without_timing=True)
    assert [(kind_of(r), r["step"]) for r in records if kind_of(r) != "log"] == [("eval", 3), ("eval", 6), ("final", 6)]
    assert checkpoint_names(output_dir)[-1] == "checkpoint-6"

    resumed = run_fit(training_args(output_dir, resume_from_checkpoint="latest", **fields), data)
    assert metrics_of(output_dir, without_timing=True) == records
    assert resumed.metrics["best_update"] == finished.metrics["best_update"]
    assert same_weights(weights(resumed.model), weights(finished.model))


def test_resuming_into_another_output_dir_brings_the_best_model_along(data, tmp_path):
    """A checkpoint resumed into a new output_dir, where no later evaluation beats the best one: the end of the run
    loads the best weights the checkpoint's run kept, as resuming in place does; without them, a one-line error."""
    fields = {"eval_strategy": "steps", "eval_steps": 2, "save_strategy": "steps", "save_steps": 2}
    fields |= {"load_best_model_at_end": True, "metric_for_best_model": "loss"}
    finished = run_fit(training_args(tmp_path / "run", **fields), data)
    checkpoint = tmp_path / "run" / "checkpoints" / checkpoint_names(tmp_path / "run")[-1]
    in_place = run_fit(training_args(tmp_path / "run", resume_from_checkpoint=str(checkpoint), **fields), data)
    elsewhere = run_fit(training_args(tmp_path / "new", resume_from_checkpoint=str(checkpoint), **fields), data)
    assert elsewhere.metrics["best_update"] == in_place.metrics["best_update"] == finished.metrics["best_update"]
    assert same_weights(weights(elsewhere.model), weights(in_place.model))

    (tmp_path / "run" / "best_model" / "model.safetensors").unlink()
    with pytest.raises(TrainingError, match="copy its best_model folder"):
        run_fit(training_args(tmp_path / "other", resume_from_checkpoint=str(checkpoint), **fields), data)


def test_a_stop_signal_saves_at_the_next_update_then_the_run_resumes(data, tmp_path, uninterrupted):
    """SIGTERM during micro-batch 4 of epoch 1 (the short window of update 6): the loop finishes that update, saves
    checkpoint-6 and raises Preempted naming it, before the epoch's evaluation; the signal handler is put back;
    the resumed run then evaluates epoch 2 and ends as the uninterrupted run."""
    output_dir = tmp_path / "run"

    def stop(epoch: int, index: int, batch: Any) -> None:
        if (epoch, index) == (1, 4):
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    trainer = make_trainer(training_args(output_dir, **RESUME_FIELDS), data, on_batch=stop)
    stopped = raised_by(Preempted, trainer.fit)
    assert signal.getsignal(signal.SIGTERM) == handler
    assert stopped.checkpoint == output_dir / "checkpoints" / "checkpoint-6"
    assert "received SIGTERM" in str(stopped)
    assert checkpoint_names(output_dir) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    written = metrics_of(output_dir)
    assert [(kind_of(r), r["step"]) for r in written][-2:] == [("log", 5), ("log", 6)]

    resume_and_compare(data, output_dir, uninterrupted)


def test_a_non_finite_loss_streak_stops_the_run_and_keeps_the_last_good_checkpoint(data, tmp_path):
    """Weights that turn NaN before update 4 (a diverging run): updates 4 and 5 are still logged (loss NaN) but not
    checkpointed, and update 6, the third non-finite one in a row (max_nonfinite_steps 3), stops the run with an
    error naming checkpoint-3, the last one saved."""
    output_dir = tmp_path / "run"
    training = training_args(
        output_dir, save_strategy="steps", save_steps=1, max_nonfinite_steps=3, throughput_warmup_steps=100
    )

    def diverge(epoch: int, index: int, batch: Any) -> None:
        if (epoch, index) == (0, 3):
            model = trainer.accelerator.unwrap_model(trainer.step.model)
            with torch.no_grad():
                model[3].bias.fill_(math.nan)

    trainer = make_trainer(training, data, on_batch=diverge)
    message = str(raised_by(TrainingError, trainer.fit))
    assert "not finite for 3 consecutive updates (from update 4 to 6)" in message
    assert f"the last good checkpoint is {output_dir / 'checkpoints' / 'checkpoint-3'}" in message
    assert checkpoint_names(output_dir) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    logs = metrics_of(output_dir)
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5]
    assert [math.isnan(r["loss"]) for r in logs] == [False, False, False, True, True]


# ---- resuming with another length ---------------------------------------------------------------------------------

LENGTH_FIELDS: dict[str, Any] = {"warmup_ratio": 0.2, "momentum": 0.9, "save_strategy": "steps", "save_steps": 6}


def logged_learning_rates(output_dir: Path) -> dict[int, float]:
    """The learning rate each training log reports, by update: the one the next update uses."""
    return {r["step"]: r["learning_rate"] for r in metrics_of(output_dir) if kind_of(r) == "log"}


@pytest.mark.parametrize("schedule", ["one_cycle", "cosine", "linear", "constant"])
@pytest.mark.parametrize(("first_length", "new_length"), [(6, 12), (12, 9)], ids=["longer", "shorter"])
def test_a_run_resumed_with_another_length_continues_on_the_schedule_of_its_new_length(
    data, tmp_path, capsys, schedule, first_length, new_length
):
    """checkpoint-6 of a run of ``first_length`` updates, resumed with max_steps ``new_length``: from update 7 on,
    every update uses the learning rate a run of ``new_length`` updates uses there (a one-cycle schedule used to
    stop past its old end with torch's "Tried to step 7 times"), the run says so, and its counters carry the new
    length into its checkpoints."""
    fields = {"lr_scheduler_type": schedule, **LENGTH_FIELDS}
    run_fit(training_args(tmp_path / "run", max_steps=first_length, **fields), data)
    run_fit(training_args(tmp_path / "reference", max_steps=new_length, **fields), data)
    expected = logged_learning_rates(tmp_path / "reference")
    capsys.readouterr()

    trainer = make_trainer(training_args(tmp_path / "run", max_steps=new_length, **fields), data)
    trainer.resume(tmp_path / "run" / "checkpoints" / "checkpoint-6")
    assert trainer.step.optimizer.param_groups[0]["lr"] == expected[6]  # what update 7 will use
    result = trainer.fit()

    assert result.metrics["train_updates"] == new_length
    rates = logged_learning_rates(tmp_path / "run")
    assert [rates[update] for update in range(7, new_length + 1)] == [
        expected[update] for update in range(7, new_length + 1)
    ]
    assert trainer.state.total_updates == new_length
    said = capsys.readouterr().out
    assert f"the checkpoint's run was {first_length} updates long, this one is {new_length}" in said
    assert f"{schedule} schedule is rebuilt for {new_length} updates and continues from update 6" in said


def test_a_run_shortened_to_end_before_its_checkpoint_is_refused_before_anything_is_written(data, tmp_path):
    """Resuming checkpoint-8 with max_steps 6 (nothing left to train), or a one-cycle checkpoint with max_steps 3
    (too short for its two phases): one error saying what to pass instead; metrics.jsonl is left as it was."""
    output_dir = tmp_path / "run"
    fields = {**LENGTH_FIELDS, "lr_scheduler_type": "one_cycle", "save_steps": 2}
    run_fit(training_args(output_dir, max_steps=12, **fields), data)
    before = (output_dir / "metrics.jsonl").read_bytes()

    checkpoint = output_dir / "checkpoints" / "checkpoint-8"
    shortened = training_args(output_dir, max_steps=6, resume_from_checkpoint=str(checkpoint), **fields)
    message = str(raised_by(TrainingError, lambda: run_fit(shortened, data)))
    assert f"checkpoint '{checkpoint}' is at update 8, past the end of this run (max_steps 6)" in message
    assert "pass --max_steps 8 or more to carry on from it, or resume from an earlier checkpoint-N with N <= 6" in (
        message
    )

    checkpoint = output_dir / "checkpoints" / "checkpoint-2"
    too_short = training_args(output_dir, max_steps=3, resume_from_checkpoint=str(checkpoint), **fields)
    message = str(raised_by(TrainingError, lambda: run_fit(too_short, data)))
    assert "holds a one_cycle schedule of 12 updates" in message and "pass --max_steps 4 or more" in message
    assert (output_dir / "metrics.jsonl").read_bytes() == before


# ---- stopping at a target, early stopping ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learnable(data) -> TinyData:
    """Validation on the training images: the validation metrics improve as the training set is memorised."""
    return TinyData(data.train, data.train)


def evaluations_of(output_dir: Path) -> list[dict[str, Any]]:
    return [r for r in metrics_of(output_dir) if kind_of(r) == "eval"]


def first_reaching(evaluations: list[dict[str, Any]], key: str, target: float, lower_is_better: bool) -> int:
    """The index of the first evaluation whose ``key`` reaches ``target``."""
    return next(
        index for index, r in enumerate(evaluations) if (r[key] <= target if lower_is_better else r[key] >= target)
    )


@pytest.mark.parametrize(
    ("metric", "strategy", "accumulation"),
    [("loss", "steps", 1), ("accuracy", "epoch", 2), ("ema_loss", "steps", 2)],
)
def test_training_stops_at_the_first_evaluation_that_reaches_the_target(
    learnable, tmp_path, metric, strategy, accumulation
):
    """target_metric_value set between the first evaluation's value and the best one of a full run: the run stops
    right after the first evaluation that reaches it (lower-is-better for *loss), reports the training seconds,
    updates and samples at that evaluation (train_runtime of its record, evaluation excluded), and still ends
    normally: best model loaded, final evaluation, EMA evaluated."""
    lower = metric.endswith("loss")
    fields = {
        "num_train_epochs": 6,
        "eval_strategy": strategy,
        "eval_steps": 2,
        "logging_steps": 100,
        "gradient_accumulation_steps": accumulation,
        "metric_for_best_model": metric,
        "load_best_model_at_end": True,
        "model_ema": metric.startswith("ema_"),
        "model_ema_decay": 0.5,
    }
    full_dir, stopped_dir = tmp_path / "full", tmp_path / "stopped"
    full = make_trainer(training_args(full_dir, **fields), learnable).fit()
    key = f"eval_{metric}"
    values = [r[key] for r in evaluations_of(full_dir)]
    best = min(values) if lower else max(values)
    assert best != values[0], "the data must improve on the first evaluation (else nothing is tested)"
    target = (values[0] + best) / 2
    reached = first_reaching(evaluations_of(full_dir), key, target, lower)
    assert reached < len(values) - 1, "the target must be reached before the last evaluation"
    assert full.metrics["time_to_target_seconds"] is None and full.metrics["stopped_early"] is False

    result = make_trainer(training_args(stopped_dir, target_metric_value=target, **fields), learnable).fit()

    evaluations = evaluations_of(stopped_dir)
    assert len(evaluations) == reached + 1  # none after the one that reached the target
    at_target = evaluations[-1]
    assert at_target[key] == values[reached]  # the same run up to there
    assert result.metrics["stopped_early"] is True
    assert result.metrics["train_updates"] == at_target["step"] == result.metrics["time_to_target_updates"]
    assert result.metrics["time_to_target_seconds"] == at_target["train_runtime"] == result.metrics["train_runtime"]
    assert result.metrics["time_to_target_samples"] == result.metrics["train_samples"]
    final = metrics_of(stopped_dir)[-1]
    assert final["final"] and "eval_loss" in final
    if fields["model_ema"]:
        assert "eval_ema_loss" in result.metrics and "eval_ema_accuracy" in final


def test_a_target_never_reached_trains_the_whole_plan_and_reports_null(data, tmp_path):
    training = training_args(tmp_path / "run", eval_strategy="epoch", target_metric_value=1.0)
    result = make_trainer(training, data).fit()
    assert result.metrics["train_updates"] == 2 * MICRO_BATCHES
    assert result.metrics["stopped_early"] is False
    assert [result.metrics[f"time_to_target_{unit}"] for unit in ("seconds", "updates", "samples")] == [None] * 3


@pytest.mark.parametrize("threshold", [0.0, 0.05])
def test_early_stopping_after_patience_evaluations_without_improvement(data, tmp_path, threshold):
    """transformers' EarlyStoppingCallback: an evaluation improves when it beats the best before it by more than
    early_stopping_threshold; the run stops at the evaluation that makes early_stopping_patience in a row that did
    not. The random labels make the validation loss rise once the training set is memorised."""
    patience = 2
    fields = {"num_train_epochs": 8, "eval_strategy": "steps", "eval_steps": 1, "logging_steps": 100}
    fields |= {"metric_for_best_model": "loss", "learning_rate": 0.2}
    full_dir = tmp_path / "full"
    make_trainer(training_args(full_dir, **fields), data).fit()
    losses = [r["eval_loss"] for r in evaluations_of(full_dir)]
    # the stopping evaluation, worked out from the full run's values by the rule above
    best, without, expected = None, 0, None
    for index, loss in enumerate(losses):
        without = 0 if best is None or (loss < best and best - loss > threshold) else without + 1
        best = loss if best is None or loss < best else best
        if without >= patience:
            expected = index
            break
    assert expected is not None and expected < len(losses) - 1, "the full run must stall before its end"

    training = training_args(
        tmp_path / "stopped", early_stopping_patience=patience, early_stopping_threshold=threshold, **fields
    )
    result = make_trainer(training, data).fit()
    evaluations = evaluations_of(tmp_path / "stopped")
    assert len(evaluations) == expected + 1
    assert result.metrics["stopped_early"] is True
    assert result.metrics["time_to_target_seconds"] is None  # no target was set


STOP_FIELDS: dict[str, Any] = {
    "gradient_accumulation_steps": 2,
    "num_train_epochs": 6,  # 18 updates
    "eval_strategy": "steps",
    "eval_steps": 2,
    "save_strategy": "steps",
    "save_steps": 2,
    "logging_steps": 100,
    "metric_for_best_model": "loss",
    "load_best_model_at_end": True,
    "model_ema": True,
    "model_ema_decay": 0.5,
    "early_stopping_patience": 3,
}


@pytest.mark.parametrize("crash_after", ["before the stop", "after the stop"])
def test_a_resumed_run_stops_where_the_uninterrupted_one_did(data, tmp_path, crash_after):
    """A run killed before its early stop resumes with its counters (the best so far, the evaluations without
    improvement, the time to target) and stops at the same evaluation with the same weights; one killed after the
    stop was decided and checkpointed (while exporting) resumes into no more training and the same end."""
    target_fields = {**STOP_FIELDS, "target_metric_value": 0.0}  # a loss target never reached: reported null
    uninterrupted = make_trainer(training_args(tmp_path / "full", **target_fields), data).fit()
    stop_update = uninterrupted.metrics["train_updates"]
    assert uninterrupted.metrics["stopped_early"] and stop_update < 18

    output_dir = tmp_path / "run"
    if crash_after == "before the stop":

        def crash(epoch: int, index: int, batch: Any) -> None:
            if trainer.state.update == stop_update - 3:  # checkpointed at an even update before it
                raise Crash

        trainer = make_trainer(training_args(output_dir, **target_fields), data, on_batch=crash)
        with pytest.raises(Crash):
            trainer.fit()
    else:  # a finished run, resumed: as a requeued job killed while exporting would be
        make_trainer(training_args(output_dir, **target_fields), data).fit()
        assert checkpoint_names(output_dir)[-1] == f"checkpoint-{stop_update}"
    resumed = run_fit(training_args(output_dir, resume_from_checkpoint="latest", **target_fields), data)
    assert resumed.metrics["train_updates"] == stop_update
    assert resumed.metrics["stopped_early"] is True
    assert resumed.metrics["best_update"] == uninterrupted.metrics["best_update"]
    assert resumed.metrics["time_to_target_updates"] is None
    assert same_weights(weights(resumed.model), weights(uninterrupted.model))
    assert metrics_of(output_dir, without_timing=True) == metrics_of(tmp_path / "full", without_timing=True)


def test_a_run_resumed_with_another_target_goes_on_to_its_own(data, tmp_path):
    """A run that stopped at one target, resumed with a target it has not reached, trains on (it does not stop at
    once on the old target's record) and reports null for a target never reached."""
    output_dir = tmp_path / "run"
    fields = {**STOP_FIELDS, "metric_for_best_model": "accuracy", "early_stopping_patience": None}
    stopped = make_trainer(training_args(output_dir, **fields, target_metric_value=0.0), data).fit()
    assert stopped.metrics["stopped_early"] is True and stopped.metrics["time_to_target_updates"] == 2
    resumed = run_fit(
        training_args(output_dir, **fields, target_metric_value=1.0, resume_from_checkpoint="latest"), data
    )
    assert resumed.metrics["train_updates"] == 18 and resumed.metrics["stopped_early"] is False
    assert resumed.metrics["time_to_target_updates"] is None and resumed.metrics["target_metric_value"] == 1.0


def test_all_results_hold_the_contracts_keys_with_their_types(data, tmp_path):
    """Every key the trainer returns for all_results.json is in accel_recipes/results.py with the value's type; with
    model_ema the final evaluation of the EMA weights is there too."""
    training = training_args(tmp_path / "run", eval_strategy="epoch", model_ema=True, target_metric_value=0.0)
    results = make_trainer(training, data).fit().metrics
    assert set(TRAINING_KEYS) <= set(results) <= set(RESULT_KEYS)
    assert {"eval_ema_accuracy", "eval_ema_f1", "eval_ema_loss", "eval_ema_samples"} <= set(results)
    for name, value in results.items():
        declared = RESULT_KEYS[name]
        if declared is float:
            declared = (int, float)
        assert isinstance(value, declared), f"{name}: {value!r} is not {RESULT_KEYS[name]}"
    assert results["time_to_target_updates"] == 5  # accuracy 0.0 is reached at the first evaluation
