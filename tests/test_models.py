"""The embedded model store: install is idempotent and atomic; aliases resolve."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pv_harness import models
from pv_harness.cli import main

from .conftest import smollm2_dir


@pytest.fixture
def real_model() -> Path:
    return smollm2_dir()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path))
    return tmp_path


def copy_converted(source: Path):
    """Stand in for the 30 s GGUF conversion with a copy of the already converted folder."""

    def convert(gguf: Path, target: Path, log) -> None:
        for item in source.iterdir():
            if item.name != models.MARKER:
                shutil.copy2(item, target / item.name)

    return convert


def test_resolve_alias_and_passthrough(home: Path) -> None:
    with pytest.raises(models.ModelStoreError, match="pv model install smollm2"):
        models.resolve("smollm2")
    assert models.resolve("some-org/some-model") == "some-org/some-model"
    assert models.resolve("/a/folder") == "/a/folder"


def test_install_is_idempotent(real_model: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    convert = copy_converted(real_model)
    monkeypatch.setattr(models, "_convert", lambda *a: (calls.append(1), convert(*a)))
    path = models.install("smollm2", log=lambda _: None)
    assert path == home / "models" / "smollm2" and (path / "config.json").exists()
    assert models.resolve("smollm2") == str(path)
    assert models.install("smollm2", log=lambda _: None) == path
    assert calls == [1]
    assert list(models.installed()) == ["smollm2"]
    result = CliRunner().invoke(main, ["model", "list"])
    assert str(path) in result.output


def test_interrupted_install_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gguf: Path, target: Path, log) -> None:
        (target / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert", broken)
    with pytest.raises(KeyboardInterrupt):
        models.install("smollm2", log=lambda _: None)
    assert list((home / "models").iterdir()) == []
    assert not models.is_installed("smollm2")


def test_unknown_alias_is_a_clear_error(home: Path) -> None:
    result = CliRunner().invoke(main, ["model", "install", "gpt-17"])
    assert result.exit_code == 1 and "embedded models: smollm2" in result.output


@pytest.mark.smollm2
def test_real_embedded_model_is_installed_and_generates() -> None:
    folder = smollm2_dir()
    assert models.install("smollm2", log=lambda _: None) == folder
    assert "paris" in models._verify(folder).lower()
