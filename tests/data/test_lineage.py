"""Source and dataset hashes: stable, and sensitive to a one-byte or one-token change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from instructune.data.lineage import dataset_hash, file_sha256


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    data = b'{"a": 1}\n' * 300_000  # larger than one read chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-2] + b"2\n")
    assert file_sha256(path) != hashlib.sha256(data).hexdigest()


def test_folder_hash_covers_names_and_contents(tmp_path: Path) -> None:
    def folder(name: str, files: dict[str, bytes]) -> Path:
        root = tmp_path / name
        for rel, content in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(content)
        return root

    base = file_sha256(folder("a", {"x/1.arrow": b"abc", "state.json": b"{}"}))
    assert file_sha256(folder("b", {"state.json": b"{}", "x/1.arrow": b"abc"})) == base
    assert file_sha256(folder("c", {"x/1.arrow": b"abd", "state.json": b"{}"})) != base
    assert file_sha256(folder("d", {"x/2.arrow": b"abc", "state.json": b"{}"})) != base
    # moving bytes between files must change the hash (length prefixes)
    assert file_sha256(folder("e", {"x/1.arrow": b"abc{", "state.json": b"}"})) != base


def test_dataset_hash_stable_across_container_types() -> None:
    examples = [([1, 2, 3], [-100, 2, 3]), ([4, 5], [4, 5])]
    as_numpy = [(np.array(i, dtype=np.int32), np.array(y, dtype=np.int64)) for i, y in examples]
    assert dataset_hash(examples) == dataset_hash(as_numpy) == dataset_hash(iter(examples))
    assert len(dataset_hash(examples)) == 64


def test_dataset_hash_sensitive_to_one_token_a_label_and_boundaries() -> None:
    base = dataset_hash([([1, 2, 3], [-100, 2, 3]), ([4, 5], [4, 5])])
    assert dataset_hash([([1, 2, 3], [-100, 2, 3]), ([4, 6], [4, 5])]) != base  # one token
    assert dataset_hash([([1, 2, 3], [1, 2, 3]), ([4, 5], [4, 5])]) != base  # one label mask
    assert dataset_hash([([1, 2], [-100, 2]), ([3, 4, 5], [3, 4, 5])]) != base  # boundaries
    assert dataset_hash([([4, 5], [4, 5]), ([1, 2, 3], [-100, 2, 3])]) != base  # order
    assert dataset_hash([]) != dataset_hash([([], [])])
