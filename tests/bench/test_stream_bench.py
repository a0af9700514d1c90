"""``recipes/bench_stream.py`` end to end on a few tiny shards: both paths are timed and the table is printed."""

from __future__ import annotations

import pytest

from accel_recipes.bench.stream import main, write_shards

pytestmark = pytest.mark.slow


def test_the_benchmark_prints_both_paths_at_both_sizes(tmp_path, capsys):
    options = ["--images", "96", "--shards", "2", "--image_size", "8", "--workers", "0", "--batch_size", "8"]
    assert main(["--output_dir", str(tmp_path), *options, "--batches", "2", "--rounds", "1", "--scale", "2"]) == 0
    table = capsys.readouterr().out
    assert "| map-style |" in table and "| streamed |" in table and "first batch, 192 images" in table
    assert "streamed / map-style images/s:" in table
    shards = sorted(path.name for path in (write_shards(tmp_path, 96, 2, 8) / "data").glob("*.parquet"))
    train = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert shards == [*train, "validation-00000-of-00001.parquet"]
