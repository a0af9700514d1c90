"""The model card of a finished run, rendered from the run folder alone, so any run can be carded and pushed later.

Reads ``config.yaml``, ``all_results.json``, ``metrics.jsonl`` and ``model/config.json``; fills the Jinja template
``card_templates/image_classification.md`` (package data) through huggingface_hub's ``ModelCard.from_template``; writes
``model/README.md`` with ``learning_curves.png`` and ``config.yaml`` copied beside it, so the model folder is the
whole Hub repository. Every value may be missing: the card then says "n/a" rather than failing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from accel_recipes.errors import RunFolderError
from accel_recipes.io import atomic_file, copy_file_atomic
from accel_recipes.models.folder import recorded_facts
from accel_recipes.results import RESULTS_FILE, evaluation_key, key

TEMPLATE = Path(__file__).resolve().parent / "card_templates" / "image_classification.md"
REQUIRED = ("config.yaml", RESULTS_FILE, "model/config.json", "model/*.safetensors")
COPIED_INTO_MODEL = ("learning_curves.png", "config.yaml")
DEFAULT_LICENSE = "apache-2.0"
NA = "n/a"
TENSORBOARD_GLOB = "events.out.tfevents.*"


def check_run_folder(output_dir: str | Path) -> Path:
    """``output_dir`` as a Path if it holds a finished run, else a RunFolderError listing what is missing."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise RunFolderError(f"run folder '{folder}' does not exist; pass the output_dir of a finished training run")
    missing = [pattern for pattern in REQUIRED if not list(folder.glob(pattern))]
    if missing:
        raise RunFolderError(
            f"'{folder}' is not a finished run folder: it has no {', '.join(missing)}; pass the output_dir that "
            "`accelerate launch recipes/train.py` wrote (it holds config.yaml, all_results.json, metrics.jsonl "
            "and model/)"
        )
    return folder


def tensorboard_files(output_dir: Path) -> list[Path]:
    """Event files the tensorboard tracker wrote under output_dir (not inside model/, checkpoints/ or temporaries)."""
    found = []
    for file in sorted(output_dir.rglob(TENSORBOARD_GLOB)):
        parts = file.relative_to(output_dir).parts
        if file.is_file() and parts[0] not in ("model", "checkpoints") and not any(p.startswith(".") for p in parts):
            found.append(file)
    return found


# ---- reading the run -------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_facts(model_config: dict[str, Any]) -> dict[str, Any]:
    """Library, architecture, stem, labels and preprocessing from the exported config.json."""
    block = recorded_facts(model_config)
    library = block.get("library") or ("transformers" if "model_type" in model_config else "timm")
    id2label = model_config.get("id2label") or {}
    labels = block.get("label_names") or model_config.get("label_names") or [id2label[k] for k in sorted(id2label)]
    model_args = model_config.get("model_args") if isinstance(model_config.get("model_args"), dict) else {}
    patch = model_args.get("patch_size") or model_config.get("patch_size")
    return {
        "patch_size": patch[0] if isinstance(patch, (list, tuple)) else patch,
        "library": library,
        "architecture": block.get("architecture") or model_config.get("architecture") or model_config.get("model_type"),
        "small_image_stem": bool(block.get("small_image_stem")),
        "label_names": list(labels),
        **block.get("preprocessing", {}),
    }


def _is_hub_id(name: str | None) -> bool:
    if not name or Path(name).expanduser().exists() or name.startswith(("/", ".", "~", "local-dir:")):
        return False
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None and not name.endswith(".parquet")


def _base_model(config: dict[str, Any], library: str) -> str | None:
    """The Hub id the weights started from, when the run was pretrained from one."""
    name = str(config.get("model_name_or_path") or "")
    if not config.get("pretrained") or not name:
        return None
    for prefix in ("hf-hub:", "hf_hub:"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    if library == "timm" and "/" not in name:
        from timm.models import get_pretrained_cfg

        try:
            cfg = get_pretrained_cfg(name)
        except RuntimeError:
            return None
        return getattr(cfg, "hf_hub_id", None) or None
    return name if _is_hub_id(name) else None


def _dataset_short_name(name: str) -> str:
    return Path(name.rstrip("/")).name or name


def _shareable_dataset_id(config: dict[str, Any], short_name: str) -> str:
    """A Hub dataset by its id; a local one by its folder name only (a card is published, a local path is not)."""
    name = str(config.get("dataset_name") or "")
    if not name:
        return NA
    return name if _is_hub_id(name) else short_name


# ---- formatting ------------------------------------------------------------------------------------------------


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else NA


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return NA if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return NA
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{hours} h {minutes:02d} min {secs:04.1f} s" if hours else f"{minutes} min {secs:04.1f} s"
    return f"{text} ({seconds:,.1f} s)"


def _value(mapping: dict[str, Any], key: str) -> str:
    return _number(mapping.get(key)) if key in mapping else NA


# ---- the card --------------------------------------------------------------------------------------------------


def _eval_results(config: dict[str, Any], results: dict[str, Any], dataset: str) -> list[EvalResult]:
    """Test accuracy and macro-F1 when the run had a test split, else validation; what the Hub shows."""
    prefix, split, pretty = (
        ("test", config.get("test_split_name") or "test", "Test")
        if evaluation_key("test", "accuracy") in results
        else ("eval", config.get("validation_split_name"), "Validation")
    )
    dataset_name = str(config.get("dataset_name") or "unknown")
    common = {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset_type": dataset_name if _is_hub_id(dataset_name) else dataset,
        "dataset_name": dataset,
        "dataset_config": config.get("dataset_config_name"),
        "dataset_split": split,
    }
    found = []
    for metric, label, args in (("accuracy", "accuracy", None), ("f1", "macro-F1", {"average": "macro"})):
        value = results.get(evaluation_key(prefix, metric))
        if isinstance(value, (int, float)):
            metric_name = f"{pretty} {label}"
            found.append(
                EvalResult(
                    **common,
                    metric_type=metric,
                    metric_value=round(float(value), 4),
                    metric_name=metric_name,
                    metric_args=args,
                )
            )
    return found


def _card_data(run: dict[str, Any], repo_id: str | None, license: str) -> ModelCardData:
    config, results, facts = run["config"], run["results"], run["model"]
    dataset_id = str(config.get("dataset_name") or "")
    tags = ["image-classification", facts["library"], "accel-recipes"]
    if dataset_id:
        tags.append(_dataset_short_name(dataset_id).lower())
    # a small-image-stem model loads through transformers' custom code (the Hub's `custom_code` tag)
    library = "transformers" if facts["small_image_stem"] else facts["library"]
    if facts["small_image_stem"]:
        tags.append("custom_code")
    eval_results = _eval_results(config, results, run["dataset"])
    return ModelCardData(
        library_name=library,
        pipeline_tag="image-classification",
        license=license,
        tags=tags,
        datasets=[dataset_id] if _is_hub_id(dataset_id) else None,
        base_model=_base_model(config, facts["library"]),
        metrics=["accuracy", "f1"],
        model_name=(repo_id or run["name"]).split("/")[-1],
        eval_results=eval_results or None,
    )


def _results_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """The exported weights on validation and test; then, with an EMA kept, the EMA weights at the end of training."""
    rows = []
    for ema in (False, True):
        for prefix, split in (("eval", "validation"), ("test", "test")):
            if evaluation_key(prefix, "accuracy", ema=ema) in results:
                rows.append(
                    {
                        "split": split + (" (EMA weights at the end of training)" if ema else ""),
                        "accuracy": _percent(results.get(evaluation_key(prefix, "accuracy", ema=ema))),
                        "f1": _percent(results.get(evaluation_key(prefix, "f1", ema=ema))),
                        "loss": _value(results, evaluation_key(prefix, "loss", ema=ema)),
                        "samples": _value(results, evaluation_key(prefix, "samples", ema=ema)),
                    }
                )
    return rows


def _setup_rows(config: dict[str, Any], results: dict[str, Any], facts: dict[str, Any]) -> list[tuple[str, str]]:
    pretrained = config.get("pretrained")
    origin = NA if pretrained is None else ("pretrained" if pretrained else "from scratch (random init)")
    size = facts.get("input_size") or config.get("image_size")
    stem = "small-image stem (3x3 stride-1 first conv, no max-pool)" if facts.get("small_image_stem") else None
    patch = facts.get("patch_size") or config.get("patch_size")
    schedule = str(config.get("lr_scheduler_type", NA))
    if config.get("warmup_steps"):
        schedule += f", {config['warmup_steps']} warmup updates"
    elif config.get("warmup_ratio"):
        schedule += f", warmup {100 * config['warmup_ratio']:.0f}% of updates"
    optimizer = str(config.get("optim", NA))
    if config.get("optim") == "sgd":
        optimizer += f" (Nesterov momentum {_number(config.get('momentum'))})"
    elif config.get("optim") == "adamw":
        optimizer += f" (betas {_number(config.get('adam_beta1'))}, {_number(config.get('adam_beta2'))})"
    epochs = f"{_value(results, key('epoch'))} epochs, {_value(results, key('train_updates'))} optimizer updates"
    name, architecture = config.get("model_name_or_path") or facts["architecture"], facts["architecture"]
    backbone = f"`{name}`" + (f" ({architecture})" if architecture and architecture != name else "")
    rows = [
        ("Backbone", backbone),
        ("Library", facts["library"]),
        ("Weights", origin),
        ("Image size", f"{size} x {size} px" if size else NA),
        ("Stem / patch", stem or (f"patch {patch}" if patch else "as the library builds it")),
        ("Preprocessing", _preprocessing(facts)),
        ("Augmentation", f"{config.get('augmentation', NA)} (crop padding {config.get('crop_padding', NA)})"),
        ("Training length", epochs),
        ("Per-device batch", _value(config, "per_device_train_batch_size")),
        ("Gradient accumulation steps", _value(config, "gradient_accumulation_steps")),
        ("Processes", _value(results, key("num_processes"))),
        ("Effective batch", _value(results, key("global_batch_size"))),
        ("Precision", _precision(results.get(key("mixed_precision")) or config.get("mixed_precision"))),
        ("Pinned memory", _pinned(config, results)),
        ("Data pipeline", f"{config.get('data_pipeline', NA)}, {config.get('dataloader_num_workers', NA)} workers"),
        ("Optimizer", optimizer),
        ("Learning rate", f"{_value(config, 'learning_rate')} peak, weight decay {_value(config, 'weight_decay')}"),
        ("Schedule", schedule),
        ("Label smoothing", _value(config, "label_smoothing_factor")),
        ("Seed", _value(config, "seed")),
    ]
    rows += _regularization_rows(config, results)
    if results.get(key("skipped_updates")):
        rows.append(("Skipped updates (non-finite fp16 gradients)", _value(results, key("skipped_updates"))))
    return rows


def _regularization_rows(config: dict[str, Any], results: dict[str, Any]) -> list[tuple[str, str]]:
    """Mixup / cutmix, random erasing, the policy and the EMA, where the run used them."""
    rows = []
    if config.get("augmentation") == "rand_augment":
        rows.append(("Policy", f"RandAugment ({config.get('rand_augment_num_ops')} ops, magnitude "
                               f"{config.get('rand_augment_magnitude')})"))  # fmt: skip
    elif config.get("augmentation") == "trivial_augment":
        rows.append(("Policy", "TrivialAugmentWide"))
    mixing = [f"{name} alpha {config[f'{name}_alpha']}" for name in ("mixup", "cutmix") if config.get(f"{name}_alpha")]
    if mixing:
        rows.append(("Mixup / cutmix", f"{', '.join(mixing)}, probability {_value(config, 'mixup_prob')}"))
    if config.get("random_erasing"):
        rows.append(("Random erasing", f"probability {_value(config, 'random_erasing')}"))
    if config.get("model_ema"):
        exported = "the EMA weights" if results.get(key("exported_weights")) == "ema" else "the live weights"
        rows.append(("EMA of the weights", f"decay {_value(config, 'model_ema_decay')}; exported: {exported}"))
    if config.get("eval_flip_tta"):
        tta = results.get(key("test_tta_accuracy"), results.get(key("eval_tta_accuracy")))
        rows.append(("Flip TTA accuracy (reported apart)", _percent(tta)))
    return rows


def _precision(value: Any) -> str:
    return {None: NA, "no": "fp32 (no mixed precision)"}.get(value, f"{value} mixed precision")


def _pinned(config: dict[str, Any], results: dict[str, Any]) -> str:
    pinned = config.get("dataloader_pin_memory")
    if pinned and results.get(key("device")) == "cpu":
        return "false (a CPU run pins nothing)"
    return _number(pinned)


def _preprocessing(facts: dict[str, Any]) -> str:
    if not facts.get("mean"):
        return NA
    mean = ", ".join(f"{value:.4f}" for value in facts["mean"])
    std = ", ".join(f"{value:.4f}" for value in facts.get("std", ()))
    return f"RGB, {facts.get('interpolation', 'bilinear')} resize, mean ({mean}), std ({std})"


def _images_per_second(value: Any) -> str:
    return f"{value:,.0f} images/s" if isinstance(value, (int, float)) else NA


def _speed_rows(results: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("Training time", _duration(results.get(key("train_runtime")))),
        ("Throughput", _images_per_second(results.get(key("train_samples_per_second")))),
    ]
    if key("steady_samples_per_second") in results:
        warmup = config.get("throughput_warmup_steps")
        label = f"Steady-state throughput (after {warmup} warm-up updates)" if warmup else "Steady-state throughput"
        updates = results.get(key("train_updates"))
        if warmup and isinstance(updates, int) and updates <= warmup:
            rows.append((label, f"not measured: the run had {updates} update(s), within the warm-up"))
        else:
            rows.append((label, _images_per_second(results[key("steady_samples_per_second")])))
    if config.get("target_metric_value") is not None:
        rows.append(("Time to the target", _time_to_target(results, config)))
    if isinstance(results.get(key("data_wait_fraction")), (int, float)):
        rows.append(("Time waiting for data", _percent(results[key("data_wait_fraction")])))
    if isinstance(results.get(key("peak_memory_mb")), (int, float)) and results[key("peak_memory_mb")] > 0:
        what = "Peak process memory (RSS)" if results.get(key("device")) == "cpu" else "Peak device memory"
        rows.append((what, f"{results[key('peak_memory_mb')] / 1024:,.1f} GiB"))
    rows.append(("Device", f"{results.get(key('device'), NA)} x {results.get(key('num_processes'), NA)} process(es)"))
    rows.append(("Precision", _precision(results.get(key("mixed_precision")))))
    return rows


def _time_to_target(results: dict[str, Any], config: dict[str, Any]) -> str:
    target = f"{config.get('metric_for_best_model', 'accuracy')} {config['target_metric_value']}"
    seconds = results.get(key("time_to_target_seconds"))
    if not isinstance(seconds, (int, float)):
        return f"{target} not reached"
    updates = results.get(key("time_to_target_updates"))
    return f"{target} reached after {_duration(seconds)} of training ({updates} updates)"


def _reproduce_command(results: dict[str, Any]) -> str:
    processes = results.get(key("num_processes"))
    topology = f"--multi_gpu --num_processes {processes} " if isinstance(processes, int) and processes > 1 else ""
    return f"accelerate launch {topology}recipes/train.py --config config.yaml"


def _limitations(config: dict[str, Any], facts: dict[str, Any], run: dict[str, Any], has_test: bool) -> list[str]:
    size = facts.get("input_size")
    notes = [
        f"Trained and evaluated only on {run['dataset']} ({len(facts['label_names'])} classes"
        + (f", {size} x {size} px inputs" if size else "")
        + "): it predicts one of these classes for any image, and its accuracy says nothing about other data.",
        "One training run with one seed: the numbers carry seed-to-seed variation of a few tenths of a percent "
        "or more.",
    ]
    if not has_test:
        notes.append(
            "The dataset had no test split: the results are on the validation split, which also chose the "
            "checkpoint (metric_for_best_model), so they are optimistic."
        )
    held_out = run["results"].get(key("validation_held_out"))
    if held_out:
        notes.append(f"The dataset had no validation split; it was streamed and {held_out}.")
    if not _is_hub_id(str(config.get("dataset_name") or "")):
        notes.append(
            f"The dataset was a local copy (`{run['dataset']}`): set `--dataset_name` to your own copy to reproduce."
        )
    notes.append("No evaluation of robustness, calibration or fairness was done.")
    return notes


def read_run(output_dir: str | Path) -> dict[str, Any]:
    """What the card needs from a run folder; missing files give empty values."""
    folder = Path(output_dir)
    config = _read_yaml(folder / "config.yaml")
    dataset = str(config.get("dataset_name") or "")
    return {
        "folder": folder,
        "name": Path(str(config.get("output_dir") or folder)).name or folder.resolve().name,
        "config": config,
        "results": _read_json(folder / RESULTS_FILE),
        "model": _model_facts(_read_json(folder / "model" / "config.json")),
        "dataset": _dataset_short_name(dataset) if dataset else "an unnamed dataset",
        "has_curves": (folder / "learning_curves.png").is_file(),
        "has_tensorboard": bool(tensorboard_files(folder)),
    }


def render_model_card(output_dir: str | Path, repo_id: str | None = None, license: str = DEFAULT_LICENSE) -> ModelCard:
    """The card of the run in ``output_dir``; ``repo_id`` (``me/name``) fills the loading snippets."""
    if not TEMPLATE.is_file():
        raise FileNotFoundError(
            f"the model card template '{TEMPLATE}' is missing from the installed package; reinstall accel-recipes "
            "(pip install --force-reinstall .)"
        )
    run = read_run(output_dir)
    config, results, facts = run["config"], run["results"], run["model"]
    repo = repo_id or config.get("hub_model_id") or run["name"]
    if "/" not in repo:
        repo = f"<your-username>/{repo}"
    has_test = any(name.startswith("test_") for name in results)
    loader = "custom_code" if facts["small_image_stem"] else facts["library"]
    return ModelCard.from_template(
        _card_data(run, repo_id, license),
        template_path=str(TEMPLATE),
        title=repo.split("/")[-1],
        repo_id=repo,
        architecture=facts.get("architecture") or NA,
        library=facts["library"],
        loader=loader,
        dataset=run["dataset"],
        dataset_id=_shareable_dataset_id(config, run["dataset"]),
        origin="fine-tuned from pretrained weights" if config.get("pretrained") else "trained from scratch",
        labels=facts["label_names"],
        results=_results_rows(results),
        has_test=has_test,
        setup=_setup_rows(config, results, facts),
        speed=_speed_rows(results, config),
        has_curves=run["has_curves"],
        has_tensorboard=run["has_tensorboard"],
        command=_reproduce_command(results),
        pushes_to_hub=bool(config.get("push_to_hub")),
        limitations=_limitations(config, facts, run, has_test),
    )


def write_model_card(output_dir: str | Path, repo_id: str | None = None, license: str = DEFAULT_LICENSE) -> Path:
    """Render the card into ``output_dir/model/README.md`` (atomically) and copy the learning curves and
    config.yaml beside it; returns the card's path."""
    folder = Path(output_dir)
    model_dir = folder / "model"
    if not (model_dir / "config.json").is_file():
        raise RunFolderError(f"'{model_dir}' holds no exported model (config.json); the card describes one")
    card = render_model_card(folder, repo_id, license)
    for name in COPIED_INTO_MODEL:
        if (folder / name).is_file():
            copy_file_atomic(folder / name, model_dir / name)
    target = model_dir / "README.md"
    with atomic_file(target) as temporary:
        card.save(temporary)
    return target
