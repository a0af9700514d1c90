"""Atomic writes: the target is either the old content or the new one, never a partial file or folder."""

import json

import pytest

from accel_recipes.io import atomic_dir, atomic_file, copy_file_atomic, write_json_atomic, write_text_atomic


def test_text_and_json_replace_the_target_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "results.json"
    write_json_atomic(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(path.name for path in target.parent.iterdir()) == ["results.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "all_results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["all_results.json"]


def test_copy(tmp_path):
    (tmp_path / "a.yaml").write_text("x: 1\n")
    copy_file_atomic(tmp_path / "a.yaml", tmp_path / "model" / "a.yaml")
    assert (tmp_path / "model" / "a.yaml").read_text() == "x: 1\n"


def test_folder_is_swapped_in_whole_or_not_at_all(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as staging:
        (staging / "config.json").write_text(json.dumps({"v": 1}))
    assert json.loads((final / "config.json").read_text()) == {"v": 1}
    with pytest.raises(OSError), atomic_dir(final) as staging:
        (staging / "config.json").write_text("half")
        raise OSError("disk full")
    assert json.loads((final / "config.json").read_text()) == {"v": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
    with atomic_dir(final) as staging:
        (staging / "config.json").write_text(json.dumps({"v": 2}))
    assert json.loads((final / "config.json").read_text()) == {"v": 2}


def test_written_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == 0o644


def test_a_finished_folder_gets_the_umasks_permissions_whatever_its_writers_made(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as staging:
            (staging / "weights").write_bytes(b"w")
            (staging / "weights").chmod(0o600)  # as safetensors or mkstemp leave a file
            (staging / "nested").mkdir(mode=0o700)
            staging.chmod(0o700)  # as tempfile.mkdtemp leaves a folder
    finally:
        os.umask(previous)
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode) for path in [tmp_path / "model", *(tmp_path / "model").iterdir()]
    }
    assert modes == {"model": 0o755, "nested": 0o755, "weights": 0o644}
