"""The model card: rendered from a run folder alone, with results, setup, speed, curves, how to load and reproduce;
its metadata (library, tags, dataset, base model, license, model-index) parses back with huggingface_hub.

``make_run_folder`` (also used by test_hub.py and test_predict.py) builds what ``recipes/train.py`` leaves behind
without training: a tiny model exported with ``save_model_folder`` and plausible config.yaml, all_results.json,
metrics.jsonl and learning_curves.png beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from transformers import ViTConfig

from accel_recipes.card import RunFolderError, check_run_folder, render_model_card, write_model_card
from accel_recipes.config import dump_config, make_args
from accel_recipes.models import build_model
from accel_recipes.models.folder import save_model_folder
from accel_recipes.reporting import plot_learning_curves
from accel_recipes.results import RESULT_KEYS

LABELS = ["airplane", "automobile", "bird", "cat", "deer"]
MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)
RESULTS = {
    "eval_loss": 1.1034,
    "eval_accuracy": 0.6125,
    "eval_f1": 0.6052,
    "eval_samples": 500,
    "test_loss": 1.1502,
    "test_accuracy": 0.6008,
    "test_f1": 0.5931,
    "test_samples": 1000,
    "train_runtime": 3723.4,
    "train_samples_per_second": 4321.5,
    "steady_samples_per_second": 4400.2,
    "data_wait_fraction": 0.031,
    "peak_memory_mb": 5120.0,
    "epoch": 2.0,
    "train_updates": 350,
    "global_batch_size": 256,
    "mixed_precision": "bf16",
    "device": "NVIDIA H100 80GB HBM3",
    "num_processes": 2,
    "skipped_updates": 0,
}
METRICS = [
    {"step": 100, "epoch": 0.5, "loss": 2.0, "learning_rate": 0.1, "images_per_second": 4000.0},
    {"step": 175, "epoch": 1.0, "eval_loss": 1.5, "eval_accuracy": 0.4, "eval_f1": 0.38, "eval_samples": 500},
    {"step": 275, "epoch": 1.5, "loss": 1.4, "learning_rate": 0.05, "images_per_second": 4300.0},
    {"step": 350, "epoch": 2.0, "eval_loss": 1.1, "eval_accuracy": 0.61, "eval_f1": 0.6, "eval_samples": 500},
]


def tiny_vit_config(folder: Path) -> Path:
    """A transformers ViT config folder small enough to build in milliseconds (built from scratch, no Hub)."""
    ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    return folder


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Weights no initialiser gives, so that predictions differ from image to image."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def make_run_folder(
    root: Path, model: str = "test_vit", *, test_split: bool = True, tensorboard: bool = False, **fields
) -> Path:
    """A finished run folder as recipes/train.py leaves it (model/, config.yaml, metrics, curves), untrained."""
    output_dir = root / "run"
    if model == "transformers-vit":
        model = str(tiny_vit_config(root / "vit-config"))
    values = {"model_name_or_path": model, "output_dir": str(output_dir), "dataset_name": "uoft-cs/cifar10"}
    args = make_args({**values, "num_train_epochs": 2, "gradient_accumulation_steps": 2, **fields})
    torch.manual_seed(0)
    spec = build_model(args.model, LABELS, MEAN, STD, 32)
    output_dir.mkdir(parents=True)
    dump_config(args, output_dir / "config.yaml")
    save_model_folder(spec, perturb(spec.model), output_dir / "model", LABELS)
    results = {key: value for key, value in RESULTS.items() if test_split or not key.startswith("test_")}
    (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))
    final = {"step": 350, "final": True, **{k: v for k, v in results.items() if k.startswith(("eval_", "test_"))}}
    (output_dir / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in [*METRICS, final]))
    plot_learning_curves(output_dir / "metrics.jsonl", output_dir / "learning_curves.png")
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "run"))  # accelerate: project_dir / run_name
        writer.add_scalar("train/loss", 2.0, 100)
        writer.close()
    return output_dir


def metadata(card_file: Path) -> dict:
    text = card_file.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("timm"), "test_vit")


# ---- the card's metadata ----------------------------------------------------------------------------------------


def test_card_is_written_into_the_model_folder_with_curves_and_config(timm_run):
    card_file = write_model_card(timm_run, repo_id="me/cifar10-vit")
    assert card_file == timm_run / "model" / "README.md"
    model_dir = timm_run / "model"
    assert (model_dir / "learning_curves.png").read_bytes() == (timm_run / "learning_curves.png").read_bytes()
    assert (model_dir / "config.yaml").read_text() == (timm_run / "config.yaml").read_text()
    assert not [path.name for path in model_dir.iterdir() if path.name.startswith(".")]  # no temporaries left


def test_metadata_names_library_tags_dataset_license_and_test_results(timm_run):
    data = metadata(write_model_card(timm_run, repo_id="me/cifar10-vit"))
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0"
    assert data["tags"] == ["image-classification", "timm", "accel-recipes", "cifar10"]
    assert data["datasets"] == ["uoft-cs/cifar10"]
    assert "base_model" not in data  # trained from scratch

    [entry] = data["model-index"]
    assert entry["name"] == "cifar10-vit"
    [result] = entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"] == {"name": "cifar10", "type": "uoft-cs/cifar10", "split": "test"}
    values = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert values == {"accuracy": 0.6008, "f1": 0.5931}


def test_metadata_validates_with_huggingface_hubs_own_parsers(timm_run):
    """``ModelCard.validate()`` posts the card to the Hub (network); offline, huggingface_hub's own parsing of
    the YAML block and of model-index is the check: it raises on anything the Hub would not read."""
    card_file = write_model_card(timm_run, repo_id="me/cifar10-vit")
    card = ModelCard.load(card_file)  # strict: invalid metadata or model-index raises ValueError
    assert isinstance(card.data, ModelCardData)
    model_index = metadata(card_file)["model-index"]
    name, results = model_index_to_eval_results(model_index)
    assert name == "cifar10-vit" and eval_results_to_model_index(name, results) == model_index
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results} == {
        ("accuracy", 0.6008, "test"),
        ("f1", 0.5931, "test"),
    }
    assert str(ModelCard(card_file.read_text())) == card_file.read_text()  # parsing round-trips unchanged


def test_without_a_test_split_the_results_are_the_validation_ones(tmp_path):
    run = make_run_folder(tmp_path, "test_vit", test_split=False)
    card_file = write_model_card(run)
    [result] = metadata(card_file)["model-index"][0]["results"]
    assert {metric["name"]: metric["value"] for metric in result["metrics"]} == {
        "Validation accuracy": 0.6125,
        "Validation macro-F1": 0.6052,
    }
    text = card_file.read_text()
    assert "| validation | 61.25% | 60.52% |" in text and "| test |" not in text
    assert "had no test split" in text
    ModelCard.load(card_file)


def test_pretrained_from_a_hub_id_names_the_base_model(tmp_path):
    run = make_run_folder(tmp_path, "transformers-vit")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.update(pretrained=True, model_name_or_path="google/vit-base-patch16-224-in21k")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    data = metadata(write_model_card(run))
    assert data["base_model"] == "google/vit-base-patch16-224-in21k"
    assert data["library_name"] == "transformers"


def test_a_timm_registry_name_resolves_to_its_hub_weights(tmp_path):
    run = make_run_folder(tmp_path, "test_vit")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.update(pretrained=True, model_name_or_path="resnet50")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert metadata(write_model_card(run))["base_model"] == "timm/resnet50.a1_in1k"


def test_a_local_dataset_is_not_claimed_as_a_hub_dataset(tmp_path):
    local = tmp_path / "my-images"
    local.mkdir()
    run = make_run_folder(tmp_path, "test_vit", dataset_name=str(local))
    card_file = write_model_card(run)
    data = metadata(card_file)
    assert "datasets" not in data and "my-images" in data["tags"]
    assert "local copy" in card_file.read_text()


# ---- the card's body --------------------------------------------------------------------------------------------


def test_body_has_results_setup_speed_curves_and_the_reproduce_command(timm_run):
    text = write_model_card(timm_run, repo_id="me/cifar10-vit").read_text()
    assert "| validation | 61.25% | 60.52% | 1.1034 | 500 |" in text
    assert "| test | 60.08% | 59.31% | 1.1502 | 1,000 |" in text
    for row in (
        "| Library | timm |",
        "| Weights | from scratch (random init) |",
        "| Image size | 32 x 32 px |",
        "| Stem / patch | patch 4 |",
        "| Training length | 2 epochs, 350 optimizer updates |",
        "| Per-device batch | 128 |",
        "| Gradient accumulation steps | 2 |",
        "| Processes | 2 |",
        "| Effective batch | 256 |",
        "| Precision | bf16 mixed precision |",
        "| Pinned memory | true |",
        "| Training time | 1 h 02 min 03.4 s (3,723.4 s) |",
        "| Throughput | 4,322 images/s |",
        "| Steady-state throughput (after 5 warm-up updates) | 4,400 images/s |",
        "| Time waiting for data | 3.10% |",
        "| Peak device memory | 5.0 GiB |",
        "| Device | NVIDIA H100 80GB HBM3 x 2 process(es) |",
    ):
        assert row in text, row
    assert "Throughput counts training steps only" in text
    assert "![Learning curves" in text and "](learning_curves.png)" in text
    assert "accelerate launch --multi_gpu --num_processes 2 recipes/train.py --config config.yaml" in text
    assert 'timm.create_model("hf-hub:me/cifar10-vit", pretrained=True)' in text
    assert "## Limitations" in text


def test_transformers_card_shows_the_pipeline_one_liner(tmp_path):
    text = write_model_card(make_run_folder(tmp_path, "transformers-vit"), repo_id="me/vit").read_text()
    assert 'pipeline("image-classification", model="me/vit")' in text
    assert "hf-hub:" not in text


def test_small_image_stem_resnet_card_loads_it_through_transformers_custom_code(tmp_path):
    card_file = write_model_card(make_run_folder(tmp_path, "test_resnet"), repo_id="me/resnet")
    text = card_file.read_text()
    assert 'pipeline("image-classification", model="me/resnet", trust_remote_code=True)' in text
    assert "small-image stem" in text and "`trust_remote_code=True` tells transformers to import and run" in text
    assert "pip install accel-recipes" not in text and "load_model_folder" not in text
    assert 'timm.create_model("hf-hub:me/resnet", pretrained=True)' not in text
    assert 'pip install "transformers>=4.48" timm' in text  # TimmWrapper, which the model code builds on
    data = ModelCard.load(card_file).data
    assert data.library_name == "transformers" and "custom_code" in data.tags


def test_without_a_repo_id_the_snippets_use_a_placeholder(timm_run):
    card = render_model_card(timm_run)
    assert "hf-hub:<your-username>/run" in card.text


def test_tensorboard_logs_are_mentioned_when_present(tmp_path):
    text = write_model_card(make_run_folder(tmp_path, "test_vit", tensorboard=True)).read_text()
    assert "TensorBoard logs of the run are in `runs/`" in text


def test_card_renders_with_missing_files_and_keys(tmp_path):
    run = make_run_folder(tmp_path, "test_vit")
    (run / "all_results.json").write_text(json.dumps({"eval_accuracy": 0.5}))
    (run / "config.yaml").write_text("model_name_or_path: test_vit\n")
    (run / "metrics.jsonl").unlink()
    (run / "learning_curves.png").unlink()
    card_file = write_model_card(run)
    text = card_file.read_text()
    assert "| validation | 50.00% | n/a | n/a | n/a |" in text
    assert "| Training time | n/a |" in text and "learning_curves.png" not in text
    ModelCard.load(card_file)


def test_writing_twice_gives_the_same_card(timm_run):
    first = write_model_card(timm_run, repo_id="me/x").read_text()
    assert write_model_card(timm_run, repo_id="me/x").read_text() == first


# ---- run folders ------------------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_says_what_is_missing(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(RunFolderError, match=r"has no all_results\.json, model/config\.json, model/\*\.safetensors"):
        check_run_folder(tmp_path)
    with pytest.raises(RunFolderError, match="does not exist"):
        check_run_folder(tmp_path / "nothing")
    with pytest.raises(RunFolderError, match="no exported model"):
        write_model_card(tmp_path)


def test_a_finished_run_folder_passes(timm_run):
    assert check_run_folder(timm_run) == timm_run


def test_the_fixture_results_are_keys_of_the_results_contract():
    """A key renamed in accel_recipes/results.py must be renamed here too, or the card tests read nothing."""
    assert set(RESULTS) <= set(RESULT_KEYS)


def test_card_shows_the_ema_weights_and_the_time_to_the_target(tmp_path):
    run = make_run_folder(tmp_path, model_ema=True, target_metric_value=0.6)
    results = json.loads((run / "all_results.json").read_text())
    results |= {"eval_ema_accuracy": 0.6231, "eval_ema_f1": 0.62, "eval_ema_loss": 1.05, "eval_ema_samples": 500}
    results |= {"time_to_target_seconds": 3001.5, "time_to_target_updates": 280, "time_to_target_samples": 71680}
    (run / "all_results.json").write_text(json.dumps(results))
    text = write_model_card(run).read_text()
    assert "| validation (EMA weights at the end of training) | 62.31% |" in text
    assert "accuracy 0.6 reached after 50 min 01.5 s (3,001.5 s) of training (280 updates)" in text

    results["time_to_target_seconds"] = None
    (run / "all_results.json").write_text(json.dumps(results))
    assert "accuracy 0.6 not reached" in write_model_card(run).read_text()
