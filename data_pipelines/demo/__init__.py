"""The embedded demo dataset: real bundled pictures moved by known, captioned motions.

A scikit-learn handwritten digit moves left/right/up/down, slowly or quickly, bouncing off
the edges of a dimmed crop of a scikit-image CC0/public-domain photo; the sound is a tone
whose pitch encodes the digit plus a click at each bounce. Each clip carries its exact
ground truth so generations can be scored: right digit, right motion, right sound.
No download; deterministic from a seed; train/validation/test disjoint in digit images.
"""
from data_pipelines.demo.clips import (DIGIT_NAMES, HANDWRITINGS_PER_DIGIT, SPEEDS, DemoClip,
                                       caption_for, demo_clip, generate_clips, num_audio_samples)
from data_pipelines.demo.materials import BACKGROUNDS, SPLITS
from data_pipelines.demo.motion import DIRECTIONS, bouncing_positions
from data_pipelines.demo.sound import digit_pitch_hz

__all__ = ["BACKGROUNDS", "DIGIT_NAMES", "DIRECTIONS", "HANDWRITINGS_PER_DIGIT", "SPEEDS", "SPLITS",
           "DemoClip", "bouncing_positions", "caption_for", "demo_clip", "digit_pitch_hz",
           "generate_clips", "num_audio_samples"]
