"""Captioned media manifests: JSONL or CSV rows naming a video or an image and its caption.

    {"video": "clips/a.mp4", "caption": "a dog runs on the beach"}
    {"image": "photos/b.jpg", "caption": "a red bicycle", "split": "validation"}

CSV files have a header with the same column names. Paths are relative to the dataset root
(by default the manifest's folder). Image folders with captions are also accepted: every
image with a caption side-car `<name>.txt` next to it becomes an image row.

Bad rows never stop a job: each comes back as a `ManifestEntry` with `error` set (bad
JSON, no caption, no media path, or a path that escapes the dataset root, which is
refused), so the ingest report lists it with the reason.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KINDS = ("video", "image")


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One manifest row. `error` is None for a usable row, else why it is skipped."""

    source: str  # "<manifest file>:<line>" for reports
    kind: str  # "video" | "image" | "" when the row is unusable
    relpath: str  # as written in the manifest
    path: str  # absolute, inside the root ("" when refused)
    caption: str
    split: str = "train"
    error: str | None = None

    @property
    def source_id(self) -> str:
        """Stable id of the media file: readable stem + hash of its path relative to the root."""
        stem = os.path.splitext(os.path.basename(self.relpath))[0] or "item"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]
        return f"{safe}-{hashlib.sha1(self.relpath.encode()).hexdigest()[:10]}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_inside(root: str, relpath: str) -> str | None:
    """Absolute real path of `relpath` under `root`, or None if it escapes the root.

    Absolute paths, `..` components and symlinks are all judged by where they really lead.
    """
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, relpath))
    if os.path.commonpath([real_root, target]) != real_root:
        return None
    return target


def _entry(row: dict, source: str, root: str, default_split: str) -> ManifestEntry:
    if not isinstance(row, dict):
        return ManifestEntry(source, "", "", "", "", default_split,
                             f"row must be a JSON object, got {type(row).__name__}")
    kinds = [k for k in KINDS if row.get(k)]
    caption = row.get("caption")
    split = str(row.get("split") or default_split)
    rel = str(row.get(kinds[0])) if kinds else ""
    if len(kinds) != 1:
        return ManifestEntry(source, "", rel, "", str(caption or ""), split,
                             f"row needs exactly one of the fields {KINDS} (got {kinds or 'none'})")
    if not isinstance(caption, str) or not caption.strip():
        return ManifestEntry(source, kinds[0], rel, "", "", split,
                             f"field 'caption' must be a non-empty string, got {caption!r}")
    path = resolve_inside(root, rel)
    if path is None:
        return ManifestEntry(source, kinds[0], rel, "", caption, split,
                             f"refused: path {rel!r} escapes the dataset root {root!r}")
    return ManifestEntry(source, kinds[0], rel, path, caption.strip(), split)


def read_manifest(manifest_path: str, root: str | None = None, default_split: str = "train"
                  ) -> list[ManifestEntry]:
    """Rows of a .jsonl/.json-lines or .csv manifest, in file order (bad rows carry `error`)."""
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"manifest {manifest_path!r} does not exist")
    root = root or os.path.dirname(os.path.abspath(manifest_path))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} (for manifest {manifest_path!r}) is not a folder")
    ext = os.path.splitext(manifest_path)[1].lower()
    name = os.path.basename(manifest_path)
    entries = []
    if ext in (".jsonl", ".ndjson"):
        with open(manifest_path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    entries.append(ManifestEntry(f"{name}:{line_no}", "", "", "", "", default_split,
                                                 f"line is not valid JSON ({e})"))
                    continue
                entries.append(_entry(row, f"{name}:{line_no}", root, default_split))
    elif ext == ".csv":
        with open(manifest_path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "caption" not in reader.fieldnames:
                raise ValueError(f"{manifest_path}: CSV header must name a 'caption' column and a "
                                 f"'video' or 'image' column, got {reader.fieldnames}")
            for row in reader:
                entries.append(_entry(row, f"{name}:{reader.line_num}", root, default_split))
    else:
        raise ValueError(f"manifest {manifest_path!r}: expected a .jsonl or .csv file, got {ext!r}")
    return entries


def read_image_folder(folder: str, split: str = "train") -> list[ManifestEntry]:
    """Images under `folder` (recursive, sorted) captioned by side-car `<name>.txt` files.

    An image without a caption file (or with an empty one) is returned with `error` set.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} does not exist")
    entries = []
    for dirpath, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            caption_file = os.path.splitext(os.path.join(dirpath, name))[0] + ".txt"
            caption = ""
            if os.path.isfile(caption_file):
                with open(caption_file, encoding="utf-8") as f:
                    caption = f.read().strip()
            row = {"image": rel, "caption": caption}
            entry = _entry(row, rel, folder, split)
            if not caption:
                entry = dataclasses.replace(entry, error=f"no caption: {caption_file!r} is missing or empty")
            entries.append(entry)
    return entries
