"""Scores a directory of clips and writes results.json, report.md and TensorBoard scalars.

    python -m vp_jax.evaluation.evaluate_clips --clips_dir=/tmp/workdir/samples \
        [--out_dir=/tmp/workdir/eval] [--feature_network=demo|i3d|none] [--i3d_weights=...]

A clip is `<name>.mp4` plus a sidecar `<name>.json` (`write_clip` writes both)::

    {"task": "t2v",                  # a vp_jax.tasks name, or "reconstruction"
     "kind": "generated",            # or "real": a real clip encoded + decoded by the
                                     #   tokenizers, scored the same way as the ceiling
     "truth": {...},                 # the demo's ground truth (data_pipelines.demo)
     "caption": "...",               # optional, shown in the report
     "audio": "<name>.wav",          # optional; else the mp4's audio stream, if any
     "reference": "<name>_ref.mp4",  # optional: the original real clip (needed for i2v,
                                     #   inpainting/outpainting, reconstruction, Frechet)
     "reference_audio": "<name>_ref.wav",   # optional, for reconstruction SI-SNR
     "fps": 8, "sample_rate": 16000, # optional (defaults shown)
     "mask": {"fraction": 0.5, "align": 8}} # optional, inpainting/outpainting box

Audio is best given as wav: AAC in mp4 is lossy and may shift samples, which SI-SNR
punishes (pitch and clicks survive it). Bad clips (missing files, corrupt media, a sidecar
without a task) are skipped and listed; everything else is scored. The main job calls
`evaluate_records` and `write_outputs` in-process with the same effect.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

from vp_jax import media
from vp_jax.evaluation import frechet, results, scoring
from vp_jax.evaluation.digit_classifier import DigitClassifier, TrainingSettings

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "vp_jax", "evaluation")
KINDS = ("generated", "real")


@dataclasses.dataclass
class ClipRecord:
    name: str
    task: str
    kind: str
    truth: dict
    video: np.ndarray | None  # uint8 [T, H, W, 3]
    audio: np.ndarray | None = None  # float32 [samples]
    reference_video: np.ndarray | None = None
    reference_audio: np.ndarray | None = None
    caption: str = ""
    fps: float = 8.0
    sample_rate: int = 16000
    mask_fraction: float = 0.5
    mask_align: int = 8
    given_frames: int = 0  # frames the prefix gave (scoring.score_clip reads the rest)


def write_clip(directory: str, name: str, task: str, kind: str, video: np.ndarray, truth: dict, *,
               audio: np.ndarray | None = None, reference_video: np.ndarray | None = None,
               reference_audio: np.ndarray | None = None, caption: str = "", fps: float = 8.0,
               sample_rate: int = 16000, mask_fraction: float = 0.5, mask_align: int = 8,
               given_frames: int = 0) -> str:
    """Writes `<name>.mp4` (+ wav, references) and its sidecar; returns the sidecar path."""
    if kind not in KINDS:
        raise ValueError(f"clip kind must be one of {KINDS}, got {kind!r}")
    os.makedirs(directory, exist_ok=True)
    sidecar = {"task": task, "kind": kind, "truth": truth, "caption": caption, "fps": fps,
               "sample_rate": sample_rate, "mask": {"fraction": mask_fraction, "align": mask_align},
               "given_frames": int(given_frames)}
    media.write_mp4(os.path.join(directory, f"{name}.mp4"), video, fps, audio, sample_rate)
    if audio is not None:
        media.write_wav(os.path.join(directory, f"{name}.wav"), audio, sample_rate)
        sidecar["audio"] = f"{name}.wav"
    if reference_video is not None:
        media.write_mp4(os.path.join(directory, f"{name}_ref.mp4"), reference_video, fps)
        sidecar["reference"] = f"{name}_ref.mp4"
    if reference_audio is not None:
        media.write_wav(os.path.join(directory, f"{name}_ref.wav"), reference_audio, sample_rate)
        sidecar["reference_audio"] = f"{name}_ref.wav"
    path = os.path.join(directory, f"{name}.json")
    with open(path, "w") as f:
        json.dump(sidecar, f, indent=1)
    return path


def read_clip(sidecar_path: str) -> ClipRecord:
    """Loads one clip from its sidecar; errors name the file and the field."""
    with open(sidecar_path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{sidecar_path}: not valid JSON: {e}") from e
    for key in ("task", "truth"):
        if key not in meta:
            raise ValueError(f"{sidecar_path}: missing field {key!r}")
    if meta.get("kind", "generated") not in KINDS:
        raise ValueError(f"{sidecar_path}: field 'kind' is {meta['kind']!r}; expected one of {KINDS}")
    if meta["task"] not in scoring.TASK_SCORES:
        raise ValueError(f"{sidecar_path}: field 'task' is {meta['task']!r}; expected one of "
                         f"{sorted(scoring.TASK_SCORES)}")
    directory = os.path.dirname(sidecar_path)
    name = os.path.splitext(os.path.basename(sidecar_path))[0]
    sample_rate = int(meta.get("sample_rate", 16000))
    path = lambda key: os.path.join(directory, meta[key])
    video_path = os.path.join(directory, f"{name}.mp4")
    video = media.read_video(video_path)[0] if os.path.isfile(video_path) else None
    if "audio" in meta:
        audio = media.read_audio(path("audio"), sample_rate)
    elif video is not None and meta["task"] in ("video_to_audio", "av_continuation"):
        audio = media.read_audio(video_path, sample_rate)
    else:
        audio = None
    mask = meta.get("mask", {})
    return ClipRecord(
        name=name, task=meta["task"], kind=meta.get("kind", "generated"), truth=meta["truth"],
        video=video, audio=audio,
        reference_video=media.read_video(path("reference"))[0] if "reference" in meta else None,
        reference_audio=media.read_audio(path("reference_audio"), sample_rate) if "reference_audio" in meta else None,
        caption=meta.get("caption", ""), fps=float(meta.get("fps", 8.0)), sample_rate=sample_rate,
        mask_fraction=float(mask.get("fraction", 0.5)), mask_align=int(mask.get("align", 8)),
        given_frames=int(meta.get("given_frames", 0)))


def load_clips(clips_dir: str) -> tuple[list[ClipRecord], list[str]]:
    """(clips, problems): every `*.json` sidecar in `clips_dir`; bad ones become a problem line."""
    if not os.path.isdir(clips_dir):
        raise FileNotFoundError(f"clips directory not found: {clips_dir}")
    records, problems = [], []
    for file in sorted(os.listdir(clips_dir)):
        if not file.endswith(".json"):
            continue
        try:
            records.append(read_clip(os.path.join(clips_dir, file)))
        except (OSError, ValueError) as e:
            problems.append(f"{file}: {e}")
    return records, problems


def evaluate_records(records: list[ClipRecord], classifier: DigitClassifier,
                     feature_network: frechet.FeatureNetwork | None = None
                     ) -> tuple[dict[str, dict[str, results.MetricEntry]], list[str]]:
    """Scores every clip; returns (results tasks, problems). Ceiling = the 'real' clips."""
    per_kind = {kind: {} for kind in KINDS}
    digits = {kind: {} for kind in KINDS}  # parallel to per_kind: each clip's true digit
    problems = []
    for record in records:
        try:
            scores = scoring.score_clip(
                record.task, record.video, record.truth, classifier=classifier, audio=record.audio,
                reference_video=record.reference_video, reference_audio=record.reference_audio,
                fps=record.fps, sample_rate=record.sample_rate, mask_fraction=record.mask_fraction,
                mask_align=record.mask_align, given_frames=record.given_frames)
        except ValueError as e:
            problems.append(f"{record.name}: {e}")
            continue
        per_kind[record.kind].setdefault(record.task, []).append(scores)
        digits[record.kind].setdefault(record.task, []).append(record.truth.get("digit"))
    tasks = results.aggregate(per_kind["generated"], per_kind["real"], digits)
    if feature_network is not None:
        _add_frechet(tasks, records, feature_network, problems)
    return tasks, problems


def _add_frechet(tasks, records, network, problems) -> None:
    """Per task: generated vs original clips (value), real reconstructions vs originals (ceiling)."""
    for task in tasks:
        group = [r for r in records if r.task == task and r.video is not None and len(r.video) > 1]
        sets = {kind: [r.video for r in group if r.kind == kind] for kind in KINDS}
        # Generated and ceiling clips of one held-out clip share its original: use one side's.
        references = {kind: [r.reference_video for r in group if r.kind == kind and r.reference_video is not None]
                      for kind in KINDS}
        originals = references["real"] if len(references["real"]) >= 2 else references["generated"]
        if len(originals) < 2:
            originals = sets["real"]
        entry = results.MetricEntry(None, higher_is_better=False)
        try:
            if len(sets["generated"]) >= 2 and len(originals) >= 2:
                entry.value = frechet.frechet_video_distance(network, np.stack(originals), np.stack(sets["generated"]))
                entry.count = len(sets["generated"])
            if len(sets["real"]) >= 2 and originals is not sets["real"]:
                entry.ceiling = frechet.frechet_video_distance(network, np.stack(originals), np.stack(sets["real"]))
                entry.ceiling_count = len(sets["real"])
        except ValueError as e:
            problems.append(f"frechet distance of task {task}: {e}")
            continue
        if entry.value is not None or entry.ceiling is not None:
            tasks[task]["frechet_distance"] = entry


def write_outputs(out_dir: str, tasks, records: list[ClipRecord], info: dict | None = None,
                  step: int = 0, tensorboard: bool = True, num_samples: int = 8) -> str:
    """results.json, report.md (+ samples.png) and TensorBoard scalars under `out_dir`."""
    info = dict(info or {})
    results.write_results(os.path.join(out_dir, "results.json"), tasks, info)
    samples = [r for r in records if r.kind == "generated" and r.video is not None][:num_samples]
    videos = labels = None
    if samples:
        shape = samples[0].video.shape
        samples = [r for r in samples if r.video.shape == shape]
        videos = np.stack([r.video for r in samples])
        labels = [f"{r.task}: {r.caption or r.name}"[:60] for r in samples]
    report = results.write_report(out_dir, tasks, videos, labels, info=info)
    if tensorboard:
        sheet = media.contact_sheet(videos, labels=labels) if videos is not None else None
        results.write_tensorboard(os.path.join(out_dir, "tensorboard"), step, tasks, sheet)
    return report


def make_feature_network(kind: str, cache_dir: str, i3d_weights: str | None = None):
    """'none' -> None; 'demo' -> the demo network (trained on real clips if not cached); 'i3d'."""
    if kind == "none":
        return None
    if kind == "i3d":
        if not i3d_weights:
            raise ValueError("--feature_network=i3d needs --i3d_weights=<file> (nothing is downloaded)")
        from vp_jax.evaluation.i3d import I3DFeatureNetwork
        return I3DFeatureNetwork(i3d_weights)
    if kind == "demo":
        from vp_jax.evaluation.demo_features import DemoFeatureNetwork
        return DemoFeatureNetwork.load_or_train(os.path.join(cache_dir, "demo_features.msgpack"))
    raise ValueError(f"--feature_network must be none, demo or i3d; got {kind!r}")


def main(argv=None) -> None:
    from absl import app, flags

    flags.DEFINE_string("clips_dir", None, "directory of <name>.mp4 + <name>.json clips", required=True)
    flags.DEFINE_string("out_dir", None, "where results.json/report.md go (default <clips_dir>/eval)")
    flags.DEFINE_string("cache_dir", DEFAULT_CACHE_DIR, "where the digit classifier/feature net are cached")
    flags.DEFINE_enum("feature_network", "demo", ["none", "demo", "i3d"], "features for the Frechet distance")
    flags.DEFINE_string("i3d_weights", None, "I3D weights file (pytorch-i3d layout) for FVD")
    flags.DEFINE_integer("classifier_clips", TrainingSettings.num_clips,
                         "real train-split clips the digit classifier is trained on (if not cached)")
    flags.DEFINE_integer("step", 0, "step number for TensorBoard")
    flags.DEFINE_bool("tensorboard", True, "also write TensorBoard scalars")

    def run(_):
        f = flags.FLAGS
        out_dir = f.out_dir or os.path.join(f.clips_dir, "eval")
        records, problems = load_clips(f.clips_dir)
        print(f"[eval] {len(records)} clips from {f.clips_dir} ({len(problems)} unreadable)")
        training = TrainingSettings(num_clips=f.classifier_clips)
        classifier = DigitClassifier.load_or_train(DigitClassifier.cache_file(f.cache_dir, training), training)
        network = make_feature_network(f.feature_network, f.cache_dir, f.i3d_weights)
        tasks, score_problems = evaluate_records(records, classifier, network)
        problems += score_problems
        report = write_outputs(out_dir, tasks, records, {"clips_dir": os.path.abspath(f.clips_dir),
                                                        "num_clips": len(records),
                                                        "skipped": problems}, f.step, f.tensorboard)
        for problem in problems:
            print(f"[eval] skipped {problem}", file=sys.stderr)
        print(f"[eval] wrote {os.path.join(out_dir, 'results.json')} and {report}")

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
