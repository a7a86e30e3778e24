"""Rows of a folder saved by `datasets` (`save_to_disk`) or of a Hugging Face Hub dataset id.

`readers` imports this module only when a source is such a folder or id, so the `datasets`
package is needed only then. Locations are `name:row N`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from instructune.data.conversation import DataError
from instructune.data.file_limits import missing_message

__all__ = ["read_hub", "read_saved_dataset"]


def read_saved_dataset(path: Path, name: str, split: str | None) -> Iterator[tuple[str, Any]]:
    if not any((path / marker).exists() for marker in ("dataset_dict.json", "state.json")):
        files = sorted(p.name for p in path.iterdir())[:10]
        raise DataError(
            f"{name}: a folder, but not one saved by `datasets` (no dataset_dict.json or "
            f"state.json); point data.path at a file inside it. Files: {files}"
        )
    datasets = _import_datasets(name)
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for damaged folders
        raise DataError(f"{name}: can't load the saved dataset ({e})") from e
    return _dataset_rows(_pick_split(loaded, name, split), name)


def read_hub(name: str, split: str | None) -> Iterator[tuple[str, Any]]:
    datasets = _import_datasets(name)
    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except ConnectionError as e:  # what datasets raises offline or without network
        raise DataError(
            f"{missing_message(Path(name), name)}. Loading it as a Hub dataset id failed too: "
            f"the Hub is unreachable or offline (HF_HUB_OFFLINE). ({e})"
        ) from e
    except Exception as e:  # unknown dataset, missing split, gated repo, ...
        raise DataError(
            f"{missing_message(Path(name), name)}. Loading it as a Hub dataset id failed too: {e}"
        ) from e
    return _dataset_rows(loaded, name)


def _pick_split(loaded: Any, name: str, split: str | None) -> Any:
    if not hasattr(loaded, "keys"):  # a single Dataset
        return loaded
    splits = sorted(loaded.keys())
    if split is None:
        split = splits[0] if len(splits) == 1 else "train" if "train" in splits else None
        if split is None:
            raise DataError(f"{name}: several splits {splits}; choose one with data.split")
    if split not in splits:
        raise DataError(f"{name}: no split {split!r}; choose one of {splits}")
    return loaded[split]


def _dataset_rows(dataset: Any, name: str) -> Iterator[tuple[str, Any]]:
    for number, row in enumerate(dataset, start=1):
        yield f"{name}:row {number}", row


def _import_datasets(name: str) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise DataError(
            f"{name}: reading `datasets` folders or Hub ids needs the `datasets` package "
            "(pip install datasets)"
        ) from e
    return datasets
