"""``python -m accel_recipes.bench.timm_reference``: timm's own train.py on Fashion-MNIST, timed as the recipes are.

timm's train.py lives in its repository, not in its wheel: pass a checkout's with ``--timm_train_py``. It runs in
this process, unchanged, with the settings a timm user would pick for 28 px grayscale images (``TIMM_SETTINGS``;
anything after ``--`` is added to them). Only two of its functions are wrapped:

- ``train_one_epoch``, to count training seconds apart from evaluation, as the recipes' ``train_runtime`` does;
- ``validate``, to record each evaluation and to stop at the first one that reaches ``--target_metric_value``.
  timm has no such option, so the wrapper ends the epoch loop as Ctrl-C would: train.py catches
  ``KeyboardInterrupt`` there and reports as usual.

The run's folder gets ``all_results.json`` and ``metrics.jsonl`` under the recipes' key names, so
``python -m accel_recipes.bench.seeds`` tables it beside the recipe's own arms. torchvision reads the data
(``--dataset torch/fashion_mnist``) from the IDX files, unpacked once into ``<output_dir>/data``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from accel_recipes.errors import ConfigError, run_entry_point
from accel_recipes.results import RESULTS_FILE, evaluation_key, key

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# What a timm user would pass for ResNet-18 on 28 px grayscale images, beside the recipe's own budget and
# optimizer (3 epochs of batch 128, SGD with Nesterov momentum 0.9 at 0.1, weight decay 5e-4): one input channel and
# the data's own statistics, a whole-image evaluation crop (timm's 0.875 would crop 28 px to 24), milder crop scales
# than ImageNet's 0.08 and no colour jitter on grayscale; otherwise timm's defaults (cosine schedule, label smoothing
# 0.1, horizontal flips), a 1-epoch warm-up, stepped per update as suits a short run.
# fmt: off
TIMM_SETTINGS = [
    "--model", "resnet18", "--num-classes", "10", "--in-chans", "1", "--input-size", "1", "28", "28",
    "--mean", "0.2860", "--std", "0.3530", "--crop-pct", "1.0", "--scale", "0.35", "1.0", "--color-jitter", "0",
    "--epochs", "3", "-b", "128", "--opt", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4",
    "--sched", "cosine", "--sched-on-updates", "--warmup-epochs", "1",
    "--train-split", "train", "--val-split", "test", "--channels-last", "--device", "cpu", "--workers", "2",
    "--checkpoint-hist", "1",
]
# fmt: on


class StopAtTarget(KeyboardInterrupt):
    """Raised from ``validate`` once the target is reached: train.py's epoch loop ends on it as on Ctrl-C."""


class TimedRun:
    """Wraps train.py's ``train_one_epoch`` and ``validate``; keeps the clock and the evaluation records."""

    def __init__(self, target: float | None, uses_ema: bool) -> None:
        self.target = target
        self.uses_ema = uses_ema
        self.train_seconds = 0.0
        self.updates = 0
        self.samples = 0
        self.epochs = 0
        self.records: list[dict[str, Any]] = []
        self.reached: dict[str, Any] | None = None

    def wrap_train(self, train_one_epoch: Callable[..., Any]) -> Callable[..., Any]:
        def timed_train_one_epoch(epoch: int, model: Any, loader: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            metrics = train_one_epoch(epoch, model, loader, *args, **kwargs)
            self.train_seconds += time.perf_counter() - start
            # timm's train loader drops the last partial batch; its prefetcher wraps the torch DataLoader
            batch_size = getattr(loader, "batch_size", None) or loader.loader.batch_size
            self.updates += len(loader)
            self.samples += len(loader) * batch_size
            self.epochs = epoch + 1
            return metrics

        return timed_train_one_epoch

    def wrap_validate(self, validate: Callable[..., Any]) -> Callable[..., Any]:
        def recorded_validate(*args: Any, log_suffix: str = "", **kwargs: Any) -> Any:
            metrics = validate(*args, log_suffix=log_suffix, **kwargs)
            ema = "EMA" in log_suffix
            record = {
                key("epoch"): float(self.epochs),
                key("train_updates"): self.updates,
                key("train_samples"): self.samples,
                key("train_runtime"): self.train_seconds,
                evaluation_key("eval", "accuracy", ema=ema): metrics["top1"] / 100.0,
                evaluation_key("eval", "loss", ema=ema): metrics["loss"],
            }
            self.records.append(record)
            decides = ema if self.uses_ema else not ema
            if decides and self.reached is None and self.target is not None and metrics["top1"] / 100.0 >= self.target:
                self.reached = record
                raise StopAtTarget
            return metrics

        return recorded_validate

    def results(self, batch_size: int) -> dict[str, Any]:
        """``all_results.json`` in the recipes' keys: the training clock, the target and the last evaluation."""
        metric = "ema_accuracy" if self.uses_ema else "accuracy"
        last: dict[str, Any] = {}
        for record in self.records:
            last.update({name: value for name, value in record.items() if name.startswith("eval_")})
        if self.uses_ema:  # as in the recipes' results, eval_* scores the weights exported: here timm's EMA
            for name in ("accuracy", "loss"):
                if evaluation_key("eval", name, ema=True) in last:
                    last[evaluation_key("eval", name)] = last[evaluation_key("eval", name, ema=True)]
        reached = self.reached or {}
        return {
            key("epoch"): float(self.epochs),
            key("train_updates"): self.updates,
            key("train_samples"): self.samples,
            key("train_runtime"): self.train_seconds,
            key("train_samples_per_second"): self.samples / self.train_seconds if self.train_seconds else 0.0,
            key("per_device_train_batch_size"): batch_size,
            key("global_batch_size"): batch_size,
            key("num_processes"): 1,
            key("device"): "cpu",
            key("exported_weights"): "ema" if self.uses_ema else "live",
            key("metric_for_best_model"): metric,
            key("target_metric_value"): self.target,
            key("time_to_target_seconds"): reached.get(key("train_runtime")),
            key("time_to_target_updates"): reached.get(key("train_updates")),
            key("time_to_target_samples"): reached.get(key("train_samples")),
            key("stopped_early"): self.reached is not None,
            **last,
        }


def load_train_script(path: Path) -> ModuleType:
    """timm's train.py as a module, not run: its ``main()`` is called once the wrappers are in place."""
    if not path.is_file():
        raise ConfigError(
            f"--timm_train_py {path} is not a file; pass the train.py of a pytorch-image-models checkout "
            "(git clone https://github.com/huggingface/pytorch-image-models)"
        )
    spec = importlib.util.spec_from_file_location("timm_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unpack_idx(source: Path, root: Path) -> Path:
    """The four IDX files of ``source`` (gzipped or not) where torchvision's FashionMNIST reads them:
    ``root/FashionMNIST/raw``."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        if (raw / name).is_file():
            continue
        if (source / name).is_file():
            shutil.copyfile(source / name, raw / name)
        elif (source / f"{name}.gz").is_file():
            with gzip.open(source / f"{name}.gz", "rb") as packed, open(raw / name, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked)
        else:
            raise ConfigError(
                f"--dataset_dir {source} has no {name}(.gz); pass the folder of the Fashion-MNIST IDX files"
            )
    return root


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="timm's train.py on Fashion-MNIST with the recipes' clock and stop-at-target; anything after "
        "-- goes to train.py after the settings a timm user would pick",
        allow_abbrev=False,
    )
    parser.add_argument("--timm_train_py", type=Path, default=Path("pytorch-image-models/train.py"))
    parser.add_argument("--dataset_dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target_metric_value", type=float, help="validation accuracy (fraction) to stop at")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    options = build_parser().parse_args(ours)

    def run() -> None:
        train = load_train_script(options.timm_train_py)
        options.output_dir.mkdir(parents=True, exist_ok=True)
        data_root = unpack_idx(options.dataset_dir, options.output_dir / "data")
        timm_args = [
            *TIMM_SETTINGS,
            "--dataset", "torch/fashion_mnist", "--data-dir", str(data_root),
            "--seed", str(options.seed),
            "--output", str(options.output_dir), "--experiment", "timm",
            *extra,
        ]  # fmt: skip
        clock = TimedRun(options.target_metric_value, uses_ema="--model-ema" in timm_args)
        train.train_one_epoch = clock.wrap_train(train.train_one_epoch)
        train.validate = clock.wrap_validate(train.validate)
        sys.argv = [str(options.timm_train_py), *timm_args]
        train.main()
        batch_size = int(timm_args[timm_args.index("-b") + 1])
        with open(options.output_dir / "metrics.jsonl", "w") as stream:
            stream.writelines(json.dumps(record) + "\n" for record in clock.records)
        with open(options.output_dir / RESULTS_FILE, "w") as stream:
            json.dump(clock.results(batch_size), stream, indent=2)
        print(json.dumps(clock.results(batch_size), indent=2))

    return run_entry_point(run)


if __name__ == "__main__":
    sys.exit(main())
