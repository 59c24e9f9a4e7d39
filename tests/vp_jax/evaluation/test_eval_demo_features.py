"""The demo feature network: trained on real clips, cached, and a working Frechet backbone."""
import dataclasses

import numpy as np
import pytest

from data_pipelines.demo import generate_clips
from vp_jax.evaluation import frechet
from vp_jax.evaluation.demo_features import DemoFeatureNetwork, FeatureTrainingSettings

TINY = FeatureTrainingSettings(num_clips=32, steps=4, batch_size=8, num_validation_clips=8)


@pytest.fixture(scope="module")
def network_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("features") / "demo_features.msgpack")
    DemoFeatureNetwork.load_or_train(path, TINY)
    return path


def test_cached_network_reloads_with_identical_features(network_path, capsys):
    videos = np.stack([c.video for c in generate_clips("validation", 3, seed=0)])
    first = DemoFeatureNetwork.load(network_path).features(videos)
    again = DemoFeatureNetwork.load_or_train(network_path, TINY)
    assert "training" not in capsys.readouterr().out
    assert first.shape == (3, 64)
    np.testing.assert_allclose(again.features(videos), first, rtol=1e-5, atol=1e-6)
    assert again.info["settings"] == dataclasses.asdict(TINY)


def test_real_clips_are_closer_to_real_clips_than_noise_is(network_path):
    network = DemoFeatureNetwork.load(network_path)
    real_a = np.stack([c.video for c in generate_clips("validation", 12, seed=0)])
    real_b = np.stack([c.video for c in generate_clips("test", 12, seed=0)])
    noise = np.random.default_rng(0).integers(0, 255, size=real_a.shape, dtype=np.uint8)
    real_vs_real = frechet.frechet_video_distance(network, real_a, real_b)
    assert frechet.frechet_video_distance(network, real_a, noise) > 2 * real_vs_real


def test_bad_files_and_inputs_are_rejected_clearly(network_path, tmp_path):
    corrupt = tmp_path / "bad.msgpack"
    corrupt.write_bytes(b"\x93garbage")
    with pytest.raises(ValueError, match="corrupt"):
        DemoFeatureNetwork.load(str(corrupt))
    with pytest.raises(ValueError, match="uint8"):
        DemoFeatureNetwork.load(network_path).features(np.zeros([1, 17, 32, 32, 3], np.float32))
