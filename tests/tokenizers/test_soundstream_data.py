"""SoundStream data sources: the demo's sound, folders of files (skipping bad ones), held-out clips."""
import ml_collections
import numpy as np
import pytest

from data_pipelines.demo import digit_pitch_hz
from vp_tokenizers.soundstream.audio_io import write_wav
from vp_tokenizers.soundstream.data import batches, heldout_clips, make_audio_source


def tone(rate, seconds, freq, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def test_demo_source_yields_tones_at_digit_pitches():
    config = ml_collections.ConfigDict({"source": "demo", "crop_samples": 8000})
    batch = next(batches(make_audio_source(config, 16000, seed=0), batch_size=8))
    assert batch.shape == (8, 8000) and batch.dtype == np.float32
    pitches = np.array([digit_pitch_hz(d) for d in range(10)])
    for crop in batch:
        peak_hz = np.argmax(np.abs(np.fft.rfft(crop))) * 16000 / 8000
        assert np.min(np.abs(pitches - peak_hz)) < 3.0, peak_hz


def test_demo_heldout_clips_differ_from_training_crops():
    config = ml_collections.ConfigDict({"source": "demo", "crop_samples": 34000})
    train = next(batches(make_audio_source(config, 16000, seed=0), batch_size=4))
    held_out = heldout_clips(config, 16000, num_clips=4, num_samples=34000, seed=0)
    assert held_out.shape == (4, 34000)
    # Other draws (digit, bounce clicks) than training's. The demo tone has a fixed phase, so a
    # click-free clip of one digit is the same sound in both by design; the sets still differ.
    assert not all(any(np.allclose(a, b) for a in train) for b in held_out)


def test_folder_source_skips_bad_files_and_yields_crops(tmp_path, capsys):
    for i in range(3):
        write_wav(str(tmp_path / f"good{i}.wav"), tone(16000, 1.0, 300 + 100 * i), 16000)
    (tmp_path / "bad.wav").write_bytes(b"nope" * 100)
    config = ml_collections.ConfigDict(
        {"source": "audio_folder", "path": str(tmp_path), "crop_samples": 1600, "shuffle_buffer": 30})
    batch = next(batches(make_audio_source(config, 16000, seed=0), batch_size=6))
    assert batch.shape == (6, 1600) and batch.dtype == np.float32
    assert np.all(np.max(np.abs(batch), axis=1) > 0.4)
    assert "bad.wav" in capsys.readouterr().err


def test_unknown_source_is_rejected():
    config = ml_collections.ConfigDict({"source": "nope", "crop_samples": 10})
    with pytest.raises(ValueError, match="config.data.source='nope'"):
        make_audio_source(config, 16000, seed=0)


def test_file_sources_need_a_heldout_folder():
    config = ml_collections.ConfigDict({"source": "audio_folder", "path": "/x", "eval_path": "",
                                        "crop_samples": 100})
    with pytest.raises(ValueError, match="config.data.eval_path is empty"):
        heldout_clips(config, 16000, num_clips=2, num_samples=1000)
