"""One errors module: every user error derives from UserError and maps to one exit code for every entry point."""

import pytest

from accel_recipes import errors
from accel_recipes.errors import (
    EXIT_PREEMPTED,
    EXIT_PUSH_FAILED,
    EXIT_USER_ERROR,
    ConfigError,
    DataError,
    ExportError,
    HubError,
    ModelError,
    PredictError,
    Preempted,
    RunFolderError,
    TrainingError,
    UserError,
    run_entry_point,
)


@pytest.mark.parametrize(
    "error_class", [ConfigError, DataError, ModelError, ExportError, TrainingError, PredictError, RunFolderError]
)
def test_user_errors_exit_2_with_one_line(error_class, capsys):
    def main() -> int:
        raise error_class("'learning_rate' must be positive, got -1")

    assert issubclass(error_class, UserError)
    assert run_entry_point(main) == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: 'learning_rate' must be positive, got -1\n"


def test_a_failed_push_exits_3_and_says_how_to_retry(capsys):
    def main() -> int:
        raise HubError("no network", "runs/a b", "me/model", private=True)

    assert run_entry_point(main) == EXIT_PUSH_FAILED == 3
    err = capsys.readouterr().err
    assert "could not push 'runs/a b' to the Hub repository 'me/model': no network" in err
    assert "python recipes/push.py 'runs/a b' --hub_model_id me/model --private" in err


def test_a_stop_after_a_checkpoint_exits_75(capsys, tmp_path):
    def main() -> int:
        raise Preempted("SIGTERM", tmp_path / "checkpoint-3")

    assert run_entry_point(main) == EXIT_PREEMPTED == 75
    assert "stopped: received SIGTERM" in capsys.readouterr().err


def test_success_and_bugs_are_not_swallowed():
    assert run_entry_point(lambda: None) == 0
    assert run_entry_point(lambda: 1) == 1
    with pytest.raises(KeyError):
        run_entry_point(lambda: {}["missing"])


def test_every_error_class_lives_in_the_errors_module():
    """No module defines an error class of its own: they are all here."""
    import pathlib
    import re

    package = pathlib.Path(errors.__file__).parent
    defined = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "errors.py" and re.search(r"^class \w+\((\w+Error|Exception)\b", path.read_text(), re.M)
    }
    assert not defined, defined
