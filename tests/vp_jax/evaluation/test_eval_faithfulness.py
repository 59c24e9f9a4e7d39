"""Faithfulness: I2V keeps the given first frame; in/outpainting keep the given region."""
import numpy as np
import pytest

from data_pipelines import masks
from data_pipelines.demo import demo_clip
from vp_jax.evaluation import faithfulness


@pytest.fixture(scope="module")
def clips():
    return demo_clip("validation", 0, seed=0).video, demo_clip("validation", 1, seed=0).video


def test_i2v_clip_starting_from_the_given_frame_scores_high_and_another_frame_low(clips):
    real, other = clips
    kept = np.concatenate([real[:1], other[1:]])
    assert faithfulness.first_frame_scores(kept, real) == {"first_frame_psnr": 60.0, "first_frame_mae": 0.0}
    wrong = faithfulness.first_frame_scores(other, real)
    assert wrong["first_frame_psnr"] < 20 and wrong["first_frame_mae"] > 10


def test_filled_region_is_exactly_where_the_masked_clip_is_grey(clips):
    real, _ = clips
    grey_in = (masks.inpaint_clip(real) == masks.MASK_VALUE).all(-1).all(0)
    grey_out = (masks.outpaint_clip(real) == masks.MASK_VALUE).all(-1).all(0)
    np.testing.assert_array_equal(faithfulness.filled_region("inpainting", 32, 32), grey_in)
    np.testing.assert_array_equal(faithfulness.filled_region("outpainting", 32, 32), grey_out)


@pytest.mark.parametrize("task", ["inpainting", "outpainting"])
def test_masked_scores_separate_the_filled_region_from_the_given_one(clips, task):
    real, other = clips
    filled = faithfulness.filled_region(task, 32, 32)
    generated = np.where(filled[None, :, :, None], other, real)  # keeps the given part, wrong fill
    scores = faithfulness.masked_region_scores(generated, real, task)
    assert scores["visible_psnr"] == 60.0 and scores["visible_mae"] == 0.0
    assert scores["masked_psnr"] < 20
    perfect = faithfulness.masked_region_scores(real, real, task)
    assert perfect["masked_psnr"] == 60.0


def test_mismatched_shapes_and_unknown_tasks_are_rejected(clips):
    real, _ = clips
    with pytest.raises(ValueError, match="one shape"):
        faithfulness.first_frame_scores(real[:, :16], real)
    with pytest.raises(ValueError, match="i2v"):
        faithfulness.filled_region("i2v", 32, 32)
    with pytest.raises(ValueError, match="region"):
        faithfulness.region_errors(real, real, np.zeros([5, 5], bool))
