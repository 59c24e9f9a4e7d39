"""`python -m data_pipelines.inspect` counts examples and writes a gif and a png."""
import numpy as np
from PIL import Image

from data_pipelines import beam_pipeline, clip_sources, clip_store, inspect, testing


def test_inspect_counts_token_shards_and_draws_the_tokens(tmp_path):
    testing.write_synthetic_shards(str(tmp_path), num_examples=5)
    result = inspect.main([f"--dir={tmp_path}", "--index=2", f"--out={tmp_path / 'look'}"])
    assert result["counts"]["train"] == 5
    gif = Image.open(result["gif"])
    assert gif.n_frames == 3  # one frame per latent frame of the synthetic geometry
    assert np.asarray(Image.open(result["png"]).convert("RGB")).std() > 0


def test_inspect_shows_raw_clips_from_ingestion(tmp_path):
    units = clip_sources.demo_units({"train": 3}, seed=0)
    result = beam_pipeline.run_pipeline(units, clip_store.RawClipEncoder(), str(tmp_path), {"train": 1})
    clip_store.write_store_spec(str(tmp_path), result.splits, {})
    shown = inspect.main([f"--dir={tmp_path}", f"--out={tmp_path / 'look'}"])
    assert shown["counts"] == {"train": 3}
    assert Image.open(shown["gif"]).n_frames == 17
