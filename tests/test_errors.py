"""One base for user-facing errors: every error class a user can trigger is a VitalError (and
keeps its built-in base), and the CLI turns any of them into one line with exit status 2."""

import importlib
import inspect
import pkgutil

import pytest

import vital_jax
from vital_jax.cli import main
from vital_jax.errors import VitalError


def _error_classes():
    for info in pkgutil.walk_packages(vital_jax.__path__, "vital_jax."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == info.name:
                yield f"{info.name}.{name}", obj


def test_every_error_class_of_the_package_is_a_vital_error():
    classes = dict(_error_classes())
    assert len(classes) >= 25, sorted(classes)
    assert [name for name, cls in classes.items() if not issubclass(cls, VitalError)] == []
    from vital_jax.data.records import DataFileError, RecordError
    from vital_jax.config.run_config import ConfigError

    assert issubclass(DataFileError, OSError) and issubclass(RecordError, ValueError)   # old bases kept
    assert issubclass(ConfigError, ValueError)


def test_cli_prints_an_unwrapped_user_error_as_one_line(monkeypatch, capsys):
    from vital_jax.data import commands_synth
    from vital_jax.data.records import RecordError

    def boom(args):
        raise RecordError("data/rl.jsonl", 7, "solution", "expected [start, end] seconds")

    monkeypatch.setattr(commands_synth, "run", boom)
    assert main(["synth", "--out", "/nonexistent/x", "--num", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "vital synth: error: data/rl.jsonl: record 7: field 'solution': expected [start, end] seconds\n"


def test_a_programming_error_still_raises(monkeypatch):
    from vital_jax.data import commands_synth

    monkeypatch.setattr(commands_synth, "run", lambda args: [][1])
    with pytest.raises(IndexError):
        main(["synth", "--out", "/nonexistent/x", "--num", "1"])
