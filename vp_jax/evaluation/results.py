"""The evaluation results: the results.json schema, TensorBoard scalars, the markdown report.

`<workdir>/eval/results.json` (schema_version 1)::

    {
      "schema_version": 1,
      "tasks": {
        "t2v": {
          "digit_correct":     {"value": 0.85, "ceiling": 0.97, "count": 40,
                                "ceiling_count": 40, "target": 0.8, "higher_is_better": true},
          "direction_correct": {"value": 0.92, "ceiling": 0.93, ...},
          ...
        },
        "video_to_audio": {"pitch_class_correct": {...}, "click_f1": {...}, ...},
        "reconstruction": {"psnr": {...}, "si_snr_db": {...}}
      },
      "info": {"clips_dir": "...", "step": 2000, ...}        # free-form provenance
    }

task -> metric -> entry. `value` is the mean over the generated clips of that task,
`ceiling` the same score of the real held-out clips the LM was prompted from, after the
tokenizers (encoded then decoded): what a perfect LM could reach with these tokenizers. Either is
null when no clip had a finite score; `count`/`ceiling_count` say how many clips went
in. `target` is the goal the issue sets (null where none is set); `higher_is_better`
says how to read the metric. Metric meanings are in `METRICS`.

A metric scored against the clip's true digit (`DIGIT_METRICS`: the digit read from the
video, the pitch class of the audio) also carries `by_digit`, the same counts per true digit
("0".."9" -> value, ceiling, count, ceiling_count), to show which digits lose the score::

    "video_to_audio": {"pitch_class_correct": {"value": 0.69, ..., "by_digit": {
        "1": {"value": 0.0, "ceiling": 1.0, "count": 8, "ceiling_count": 8}, ...}}}

Every other entry has `by_digit` null.

The teacher-forced metrics 'loss', 'accuracy' and 'conditioning_gain' (vp_jax/trainer.py's
eval on config.eval.split; the gain is the loss given another example's conditioning minus
the true loss) are means over output tokens, not clips: their `count` is the number of
scored target tokens of that task and `examples` the number of examples those tokens came
from (null for every clip-scored metric); they have no ceiling::

    "t2v": {"loss": {"value": 3.44, "ceiling": null, "count": 1632, "ceiling_count": 0,
                     "examples": 8, "target": null, "higher_is_better": false}, ...}

Shapes: contact-sheet videos uint8 [N, T, H, W, 3].
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from typing import Iterable, Mapping

import numpy as np

from vp_jax.files import atomic_open

SCHEMA_VERSION = 1

# metric -> (higher is better, what it means). Unknown metrics are allowed (higher is better).
METRICS: dict[str, tuple[bool, str]] = {
    "digit_correct": (True, "share of clips whose sprite the real-digit classifier reads as the captioned digit"),
    "digit_frame_share": (True, "share of sprite frames read as the true digit"),
    "direction_correct": (True, "share of clips whose tracked initial direction is the captioned one"),
    "speed_class_correct": (True, "share of clips whose fitted speed is nearer the true speed class"),
    "speed_abs_error": (False, "|fitted - true| speed, px/frame"),
    "motion_fit_error_px": (False, "mean distance of the tracked path from the best bouncing path, px"),
    "sprite_found_fraction": (True, "share of frames where a sprite was found"),
    "trajectory_error_px": (False, "tracked vs true path after removing a constant offset, px"),
    "first_frame_psnr": (True, "PSNR of frame 0 against the given real frame, dB"),
    "first_frame_mae": (False, "mean absolute error of frame 0, grey levels"),
    "masked_psnr": (True, "PSNR inside the region the model filled, dB"),
    "masked_mae": (False, "mean absolute error inside the filled region, grey levels"),
    "visible_psnr": (True, "PSNR in the region the model was given, dB"),
    "visible_mae": (False, "mean absolute error in the given region, grey levels"),
    "pitch_class_correct": (True, "share of clips whose tone's nearest digit pitch is the true digit's"),
    "pitch_hz": (True, "estimated tone pitch, Hz (informative)"),
    "pitch_cents_error": (False, "|estimated - true| pitch, cents"),
    "click_precision": (True, "detected clicks that match a bounce"),
    "click_recall": (True, "bounces that have a detected click"),
    "click_f1": (True, "F1 of clicks vs bounces (tolerance half a frame)"),
    "click_timing_error_ms": (False, "mean |click - bounce| time of matched clicks, ms"),
    "psnr": (True, "tokenizer reconstruction PSNR, dB"),
    "si_snr_db": (True, "audio tokenizer reconstruction SI-SNR, dB"),
    "frechet_distance": (False, "Frechet distance of feature-network features, generated vs real"),
    "loss": (False, "teacher-forced loss per output token (n: scored target tokens and their examples)"),
    "accuracy": (True, "teacher-forced next-token accuracy (n: scored target tokens and their examples)"),
    "conditioning_gain": (True, "teacher-forced loss given another example's caption/frames/audio minus given "
                                "its own, nats per output token; ~0 means the conditioning is ignored"),
}

# Scores of a clip against its true digit: their entries also break down by that digit.
DIGIT_METRICS = ("digit_correct", "pitch_class_correct")
_BY_DIGIT_FIELDS = ("value", "ceiling", "count", "ceiling_count")

# The targets for the default run: (task, metric) -> value the generated score should reach.
TARGETS: dict[tuple[str, str], float] = {
    ("t2v", "digit_correct"): 0.8,
    ("t2v", "direction_correct"): 0.9,
    ("video_to_audio", "pitch_class_correct"): 0.8,
}


@dataclasses.dataclass
class MetricEntry:
    value: float | None
    ceiling: float | None = None
    count: int = 0
    ceiling_count: int = 0
    target: float | None = None
    higher_is_better: bool = True
    # Per-token metrics (teacher-forced loss/accuracy): `count` counts scored target tokens
    # and this the examples they came from. None for per-clip metrics.
    examples: int | None = None
    # DIGIT_METRICS only: true digit ("0".."9") -> {value, ceiling, count, ceiling_count}.
    by_digit: dict[str, dict] | None = None

    def meets_target(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


def _mean(values: Iterable[float]) -> tuple[float | None, int]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return (float(np.mean(finite)) if finite else None), len(finite)


def aggregate(generated: Mapping[str, list[Mapping[str, float]]],
              ceiling: Mapping[str, list[Mapping[str, float]]] | None = None,
              digits: Mapping[str, Mapping[str, list[int]]] | None = None
              ) -> dict[str, dict[str, MetricEntry]]:
    """task -> list of per-clip score dicts (generated, and real ceiling clips) -> results tasks.

    Each metric is the mean of its finite per-clip values; a metric only real clips have
    (or only generated ones) gets a null on the other side. `digits` ({'generated': {task:
    [true digit per clip]}, 'real': ...}, parallel to the score lists) adds `by_digit` to
    the DIGIT_METRICS entries.
    """
    ceiling = ceiling or {}
    tasks: dict[str, dict[str, MetricEntry]] = {}
    for task in list(generated) + [t for t in ceiling if t not in generated]:
        gen_clips, real_clips = generated.get(task, []), ceiling.get(task, [])
        metrics = list(dict.fromkeys(m for clip in list(gen_clips) + list(real_clips) for m in clip))
        entries = {}
        for metric in metrics:
            value, count = _mean(clip.get(metric) for clip in gen_clips)
            ceiling_value, ceiling_count = _mean(clip.get(metric) for clip in real_clips)
            entries[metric] = MetricEntry(value, ceiling_value, count, ceiling_count,
                                          TARGETS.get((task, metric)), METRICS.get(metric, (True,))[0])
        if digits:
            _add_by_digit(entries, gen_clips, real_clips, digits['generated'].get(task, []),
                          digits['real'].get(task, []))
        tasks[task] = entries
    return tasks


def _add_by_digit(entries: dict[str, MetricEntry], gen_clips, real_clips, gen_digits, real_digits) -> None:
    """Fills `by_digit` of the DIGIT_METRICS in `entries`, aggregating each true digit alone."""
    for metric in DIGIT_METRICS:
        if metric not in entries:
            continue
        breakdown = {}
        for digit in sorted({d for d in list(gen_digits) + list(real_digits) if d is not None}):
            value, count = _mean(c.get(metric) for c, d in zip(gen_clips, gen_digits) if d == digit)
            ceiling_value, ceiling_count = _mean(c.get(metric) for c, d in zip(real_clips, real_digits) if d == digit)
            breakdown[str(digit)] = dict(zip(_BY_DIGIT_FIELDS, (value, ceiling_value, count, ceiling_count)))
        entries[metric].by_digit = breakdown


def _finite_or_none(value):
    return value if value is None or math.isfinite(value) else None


def results_to_json(tasks: Mapping[str, Mapping[str, MetricEntry]], info: Mapping | None = None) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tasks": {task: {metric: {k: _finite_or_none(v) if isinstance(v, float) else v
                                  for k, v in dataclasses.asdict(entry).items()}
                         for metric, entry in metrics.items()}
                  for task, metrics in tasks.items()},
        "info": dict(info or {}),
    }


def results_from_json(data: Mapping, source: str = "results") -> tuple[dict[str, dict[str, MetricEntry]], dict]:
    """Parses and validates a results dict; errors name the task, metric and field."""
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{source}: schema_version {data.get('schema_version')!r}; expected {SCHEMA_VERSION}")
    if not isinstance(data.get("tasks"), Mapping):
        raise ValueError(f"{source}: 'tasks' must be an object of task -> metric -> entry")
    fields = {f.name for f in dataclasses.fields(MetricEntry)}
    tasks = {}
    for task, metrics in data["tasks"].items():
        if not isinstance(metrics, Mapping):
            raise ValueError(f"{source}: tasks.{task} must be an object of metric -> entry")
        tasks[task] = {}
        for metric, entry in metrics.items():
            if not isinstance(entry, Mapping) or set(entry) - fields or "value" not in entry:
                raise ValueError(f"{source}: tasks.{task}.{metric} must have 'value' and only the "
                                 f"fields {sorted(fields)}; got {entry!r}")
            for key in ("value", "ceiling", "target"):
                if entry.get(key) is not None and not isinstance(entry[key], (int, float)):
                    raise ValueError(f"{source}: tasks.{task}.{metric}.{key} must be a number or "
                                     f"null; got {entry[key]!r}")
            for key in ("count", "ceiling_count", "examples"):
                if entry.get(key) is not None and (not isinstance(entry[key], int) or entry[key] < 0):
                    raise ValueError(f"{source}: tasks.{task}.{metric}.{key} must be a count >= 0"
                                     f"{' or null' if key == 'examples' else ''}; got {entry[key]!r}")
            by_digit = entry.get("by_digit")
            if by_digit is not None and not (isinstance(by_digit, Mapping) and all(
                    isinstance(d, Mapping) and set(d) == set(_BY_DIGIT_FIELDS) for d in by_digit.values())):
                raise ValueError(f"{source}: tasks.{task}.{metric}.by_digit must map each digit to "
                                 f"{list(_BY_DIGIT_FIELDS)}; got {by_digit!r}")
            tasks[task][metric] = MetricEntry(**entry)
    return tasks, dict(data.get("info", {}))


def write_results(path: str, tasks: Mapping[str, Mapping[str, MetricEntry]], info: Mapping | None = None) -> dict:
    """Writes results.json atomically (write then rename); returns the written dict."""
    data = results_to_json(tasks, info)
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, sort_keys=False, allow_nan=False)
    return data


def read_results(path: str) -> tuple[dict[str, dict[str, MetricEntry]], dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    return results_from_json(data, source=path)


def write_tensorboard(logdir: str, step: int, tasks: Mapping[str, Mapping[str, MetricEntry]],
                      contact_sheet: np.ndarray | None = None) -> None:
    """Scalars `eval/<task>/<metric>` and `eval_ceiling/<task>/<metric>`, plus the contact sheet."""
    from vp_jax.progress import Progress

    progress = Progress(total_steps=max(step, 1), logdir=logdir, name="eval")
    scalars = {}
    for task, metrics in tasks.items():
        for metric, entry in metrics.items():
            if entry.value is not None:
                scalars[f"eval/{task}/{metric}"] = entry.value
            if entry.ceiling is not None:
                scalars[f"eval_ceiling/{task}/{metric}"] = entry.ceiling
    progress.write_scalars(step, scalars)
    if contact_sheet is not None:
        progress.write_images(step, {"eval/samples": np.asarray(contact_sheet)[None]})
    progress.close()


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _format_counts(entry: MetricEntry) -> str:
    """'gen/real' clips, or 'N tokens / M examples' for a per-token (teacher-forced) metric."""
    if entry.examples is not None:
        return f"{entry.count} tokens / {entry.examples} examples"
    return f"{entry.count}/{entry.ceiling_count}"


def _format_share(value: float | None, count: int) -> str:
    """'right/scored' of a 0/1 clip score from its mean and count ('-' when none was scored)."""
    return "-" if value is None or not count else f"{round(value * count)}/{count}"


def _by_digit_table(tasks: Mapping[str, Mapping[str, MetricEntry]]) -> list[str]:
    """Report lines: each by-digit entry as one row of right/scored per true digit."""
    rows = [(task, metric, entry) for task, metrics in tasks.items() for metric, entry in metrics.items()
            if entry.by_digit]
    if not rows:
        return []
    digits = sorted({d for _, _, entry in rows for d in entry.by_digit}, key=int)
    lines = ["", "## By true digit", "",
             "Generated clips scored right / scored, per true digit; the same on the real ceiling clips in "
             "brackets.", "",
             "| task | metric | " + " | ".join(digits) + " |", "|---|---|" + "---|" * len(digits)]
    for task, metric, entry in rows:
        cells = []
        for digit in digits:
            cell = entry.by_digit.get(digit)
            if cell is None:
                cells.append("-")
                continue
            ceiling = _format_share(cell["ceiling"], cell["ceiling_count"])
            cells.append(_format_share(cell["value"], cell["count"]) + (f" ({ceiling})" if ceiling != "-" else ""))
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return lines


def markdown_report(tasks: Mapping[str, Mapping[str, MetricEntry]], title: str = "Evaluation",
                    contact_sheet_file: str | None = None, info: Mapping | None = None) -> str:
    """A short report: one table row per task and metric (value, ceiling, target, n)."""
    lines = [f"# {title}", ""]
    for key, value in (info or {}).items():
        lines.append(f"- {key}: {value}")
    if info:
        lines.append("")
    lines += ["Value: mean over generated clips. Ceiling: the same score on the real held-out "
              "clips they were prompted from, encoded and decoded by the tokenizers. n: "
              "generated/real clips scored; for the teacher-forced loss and accuracy, the scored "
              "target tokens and their examples.", "",
              "| task | metric | value | ceiling | target | n |",
              "|---|---|---|---|---|---|"]
    for task, metrics in tasks.items():
        for metric, entry in metrics.items():
            target = "-"
            if entry.target is not None:
                met = entry.meets_target()
                mark = "" if met is None else (" met" if met else " NOT met")
                target = f"{'>=' if entry.higher_is_better else '<='} {entry.target:g}{mark}"
            lines.append(f"| {task} | {metric} | {_format(entry.value)} | {_format(entry.ceiling)} | "
                         f"{target} | {_format_counts(entry)} |")
    lines += _by_digit_table(tasks)
    if contact_sheet_file:
        lines += ["", "## Samples", "", f"![contact sheet]({contact_sheet_file})"]
    lines += ["", "## Metrics", ""]
    used = list(dict.fromkeys(m for metrics in tasks.values() for m in metrics))
    lines += [f"- `{m}`: {METRICS[m][1]}" for m in used if m in METRICS]
    return "\n".join(lines) + "\n"


def write_report(directory: str, tasks: Mapping[str, Mapping[str, MetricEntry]],
                 sample_videos: np.ndarray | None = None, sample_labels: list[str] | None = None,
                 title: str = "Evaluation", info: Mapping | None = None) -> str:
    """Writes `report.md` (and `samples.png`, a contact sheet of uint8 [N, T, H, W, 3]); returns its path."""
    from vp_jax import media

    os.makedirs(directory, exist_ok=True)
    sheet_file = None
    if sample_videos is not None and len(sample_videos):
        sheet_file = "samples.png"
        media.write_png(os.path.join(directory, sheet_file),
                        media.contact_sheet(np.asarray(sample_videos), labels=sample_labels))
    path = os.path.join(directory, "report.md")
    with open(path, "w") as f:
        f.write(markdown_report(tasks, title, sheet_file, info))
    return path
