"""Resolution of model.path: embedded name, folders, .gguf files, Hub ids, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructune.config.schema import EMBEDDED_MODEL, ModelConfig
from instructune.models.resolve import ResolvedModel, resolve_model


def _folder(root: Path, *files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).write_text("{}")
    return root


def test_embedded_name_resolves_to_cached_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import instructune.models.embedded as embedded

    monkeypatch.setattr(embedded, "ensure_embedded_model", lambda: tmp_path)
    assert resolve_model(ModelConfig(path=EMBEDDED_MODEL)) == ResolvedModel(
        "embedded", str(tmp_path)
    )


def test_folder_with_config_json(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", "config.json", "other.gguf")
    assert resolve_model(ModelConfig(path=str(folder))) == ResolvedModel("folder", str(folder))


def test_folder_with_one_gguf(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", "model.Q4_K_M.gguf")
    got = resolve_model(ModelConfig(path=str(folder)))
    assert got == ResolvedModel("gguf", str(folder), "model.Q4_K_M.gguf")


def test_folder_with_several_ggufs_needs_a_choice(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", "a.gguf", "b.gguf")
    with pytest.raises(ValueError, match=r"model\.gguf_file") as err:
        resolve_model(ModelConfig(path=str(folder)))
    assert "a.gguf" in str(err.value) and "b.gguf" in str(err.value)
    got = resolve_model(ModelConfig(path=str(folder), gguf_file="b.gguf"))
    assert got == ResolvedModel("gguf", str(folder), "b.gguf")


def test_gguf_file_choice_beats_config_json(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", "config.json", "a.gguf")
    got = resolve_model(ModelConfig(path=str(folder), gguf_file="a.gguf"))
    assert got.kind == "gguf" and got.gguf_file == "a.gguf"


def test_missing_gguf_choice_lists_the_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", "a.gguf")
    with pytest.raises(FileNotFoundError, match=r"'nope\.gguf'.*\['a\.gguf'\]"):
        resolve_model(ModelConfig(path=str(folder), gguf_file="nope.gguf"))


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.json and no \.gguf"):
        resolve_model(ModelConfig(path=str(tmp_path)))


def test_gguf_file_path(tmp_path: Path) -> None:
    _folder(tmp_path, "model.gguf")  # content is never read by resolution
    got = resolve_model(ModelConfig(path=str(tmp_path / "model.gguf")))
    assert got == ResolvedModel("gguf", str(tmp_path), "model.gguf")


def test_other_file_is_an_error(tmp_path: Path) -> None:
    _folder(tmp_path, "weights.bin")
    with pytest.raises(ValueError, match=r"not a \.gguf"):
        resolve_model(ModelConfig(path=str(tmp_path / "weights.bin")))


def test_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = ModelConfig(path="HuggingFaceTB/SmolLM2-135M-Instruct", gguf_file="x.gguf")
    got = resolve_model(cfg)
    assert got == ResolvedModel("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "x.gguf")


def test_local_folder_wins_over_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "org" / "name", "config.json")
    got = resolve_model(ModelConfig(path="org/name"))
    assert got == ResolvedModel("folder", str(tmp_path / "org" / "name"))


@pytest.mark.parametrize("path", ["./missing", "a/b/c", "missing.gguf", "org/model.gguf"])
def test_unresolvable_lists_what_was_tried(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        resolve_model(ModelConfig(path=path))
    message = str(err.value)
    assert EMBEDDED_MODEL in message and "no folder or .gguf file" in message
    assert "Hub id" in message
