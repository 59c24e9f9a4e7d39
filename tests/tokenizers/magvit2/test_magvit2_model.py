"""Causal 3D encoder/decoder: causality, images as 1-frame videos, geometry, inflation."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.config import load_config_file
from vp_tokenizers.magvit2.inflate import image_config_for, inflate_params
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config, check_video

TINY = Magvit2Config(num_bits=6, base_channels=4, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                     spatial_downsample=(True, True), temporal_downsample=(True, True), num_groups=2)


@pytest.fixture(scope="module")
def model_and_params():
  model = Magvit2(TINY)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 9, 16, 16, 3)))
  return model, params


def _video(seed, shape=(2, 9, 16, 16, 3)):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def test_changing_frame_t_never_changes_latents_of_earlier_frames(model_and_params):
  model, params = model_and_params
  encode = jax.jit(lambda x: model.apply(params, x, method=Magvit2.encode))
  video = _video(0)
  base = encode(video)
  assert base.shape == (2, 3, 4, 4, 6)
  for t in range(1, 9):
    changed = encode(video.at[:, t].set(_video(t)[:, t]))
    first_affected = 1 + (t - 1) // 4  # latent frame 0 covers frame 0; then 4 frames each
    np.testing.assert_array_equal(changed[:, :first_affected], base[:, :first_affected])
    assert not np.allclose(changed[:, first_affected], base[:, first_affected])


def test_frame_zero_latents_equal_the_latents_of_the_image_alone(model_and_params):
  model, params = model_and_params
  video = _video(1)
  encode = jax.jit(lambda x: model.apply(params, x, method=Magvit2.encode))
  video_latents, image_latents = encode(video), encode(video[:, :1])
  assert image_latents.shape == (2, 1, 4, 4, 6)
  np.testing.assert_allclose(image_latents[:, 0], video_latents[:, 0], atol=1e-5)


def test_decoded_frames_depend_only_on_current_and_earlier_latents(model_and_params):
  model, params = model_and_params
  codes = jnp.sign(_video(2, (1, 3, 4, 4, 6))) + 0.0
  decode = jax.jit(lambda q: model.apply(params, q, method=Magvit2.decode))
  out = decode(codes)
  assert out.shape == (1, 9, 16, 16, 3)
  out_changed = decode(codes.at[:, 2].multiply(-1.0))
  np.testing.assert_array_equal(out[:, :5], out_changed[:, :5])


def test_portrait_and_landscape_geometries_reconstruct_to_their_shape(model_and_params):
  model, params = model_and_params
  for shape in [(1, 5, 16, 8, 3), (1, 1, 8, 24, 3)]:
    recon, aux = jax.jit(model.apply)(params, _video(3, shape))
    assert recon.shape == shape
    assert aux["ids"].shape == (1,) + TINY.latent_shape(*shape[1:4])


def test_paper_geometry_maps_17x128x128_to_5x16x16():
  paper = Magvit2Config()
  assert paper.latent_shape(17, 128, 128) == (5, 16, 16)
  assert paper.latent_shape(17, 224, 128) == (5, 28, 16)
  assert paper.latent_shape(1, 128, 128) == (1, 16, 16)
  assert paper.latent_shape(41, 128, 128) == (11, 16, 16)


def test_bad_geometry_and_rank_give_clear_errors():
  with pytest.raises(ValueError, match=r"num_frames must be 1 \+ 4\*n.*got 8"):
    check_video(np.zeros((1, 8, 16, 16, 3)), TINY)
  with pytest.raises(ValueError, match="multiples of 4, got 18x16"):
    check_video(np.zeros((1, 5, 18, 16, 3)), TINY)
  with pytest.raises(ValueError, match=r"rank 5.*\(5, 16, 16, 3\)"):
    check_video(np.zeros((5, 16, 16, 3)), TINY)
  with pytest.raises(ValueError, match="3 channels"):
    check_video(np.zeros((1, 5, 16, 16, 4)), TINY)


def test_bad_model_config_names_the_field():
  with pytest.raises(ValueError, match="temporal_downsample needs 2 entries"):
    Magvit2Config.from_dict(dict(TINY.to_dict(), temporal_downsample=(True,)))
  with pytest.raises(ValueError, match="num_groups=3 must divide"):
    Magvit2Config.from_dict(dict(TINY.to_dict(), num_groups=3))
  with pytest.raises(ValueError, match="unknown fields"):
    Magvit2Config.from_dict(dict(TINY.to_dict(), widths=3))


@pytest.mark.parametrize("latent_kernel, spatial_downsample", [(3, (True, True)), (1, (True, True)),
                                                               (3, (True, False))])
def test_inflated_image_model_reproduces_the_image_model_on_static_videos(latent_kernel, spatial_downsample):
  # With (True, False) the second level transition only down-samples time: its encoder conv
  # and decoder depth-to-space layer have no image counterpart and start as identities.
  video_config = Magvit2Config.from_dict(dict(TINY.to_dict(), encoder_latent_kernel_size=latent_kernel,
                                              spatial_downsample=spatial_downsample))
  image_config = image_config_for(video_config)
  assert image_config.temporal_kernel_size == 1 and image_config.temporal_factor == 1
  image_model, video_model = Magvit2(image_config), Magvit2(video_config)
  frame = _video(4, (2, 1, 16, 16, 3))
  # Perturb every parameter so the zero-initialised modulations are exercised too.
  image_params = jax.jit(image_model.init)(jax.random.PRNGKey(1), frame)
  image_params = jax.jit(lambda ps: jax.tree.map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(2), p.shape), ps))(image_params)
  template = jax.eval_shape(video_model.init, jax.random.PRNGKey(3), jnp.zeros((1, 5, 16, 16, 3)))
  template = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), template)
  video_params, fresh = inflate_params(image_params, template)
  temporal_only = [] if all(spatial_downsample) else [
      "['params']['decoder']['up2_sample']['conv']['bias']", "['params']['decoder']['up2_sample']['conv']['kernel']",
      "['params']['encoder']['down1_sample']['bias']", "['params']['encoder']['down1_sample']['kernel']"]
  assert sorted(fresh) == temporal_only
  image_out, image_aux = jax.jit(image_model.apply)(image_params, frame)
  video_out, video_aux = jax.jit(video_model.apply)(video_params, jnp.repeat(frame, 5, axis=1))
  np.testing.assert_allclose(video_out, jnp.repeat(image_out, 5, axis=1), atol=1e-4)
  np.testing.assert_array_equal(video_aux["ids"][:, 0], image_aux["ids"][:, 0])


def _patch_changes_left_latents(config: Magvit2Config, width: int, patch_from: int) -> bool:
  """Does a bright patch from column `patch_from` to the right edge change the 4 leftmost latent columns?"""
  model = Magvit2(config)
  image = _video(5, (1, 1, 16, width, 3)) * 0.1
  params = model.init(jax.random.PRNGKey(0), image)
  encode = jax.jit(lambda x: model.apply(params, x, method=Magvit2.encode))
  left_before = encode(image)[:, :, :, :4]
  left_after = encode(image.at[:, :, :, patch_from:].set(1.0))[:, :, :, :4]
  return not np.allclose(left_before, left_after, atol=1e-6)


def _one_level_config(**norm) -> Magvit2Config:
  """One 2x spatial level, no time mixing: a receptive field small enough to test norm locality."""
  return Magvit2Config(num_bits=6, base_channels=4, channel_multipliers=(1, 2), num_res_blocks=1,
                       spatial_downsample=(True,), temporal_downsample=(False,), temporal_kernel_size=1,
                       num_groups=2, **norm)


@pytest.mark.parametrize("encoder_norm, far_patch_changes_latents", [("group", True), ("position", False)])
def test_position_norm_keeps_latents_blind_to_content_outside_the_receptive_field(
    encoder_norm, far_patch_changes_latents):
  config = _one_level_config(encoder_norm=encoder_norm)
  # A bright patch at the right edge, ~80 px from the left columns (receptive field < 40 px).
  assert _patch_changes_left_latents(config, 96, 88) == far_patch_changes_latents


@pytest.mark.parametrize("decoder_norm, far_codes_change_left_pixels", [("group", True), ("position", False)])
def test_position_norm_keeps_decoded_pixels_blind_to_codes_outside_the_receptive_field(
    decoder_norm, far_codes_change_left_pixels):
  config = _one_level_config(decoder_norm=decoder_norm)
  model = Magvit2(config)
  codes = jnp.sign(_video(6, (1, 1, 8, 48, 6)))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 16, 96, 3)))
  # Perturb every parameter so the zero-initialised modulations read the codes.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  decode = jax.jit(lambda q: model.apply(params, q, method=Magvit2.decode))
  # Flip the codes of the right half, ~80 px from the left 8 columns (receptive field < 40 px).
  left_before = decode(codes)[..., :8, :]
  left_after = decode(codes.at[..., 24:, :].multiply(-1.0))[..., :8, :]
  assert (not np.allclose(left_before, left_after, atol=1e-6)) == far_codes_change_left_pixels


@pytest.mark.parametrize("field", ["encoder_norm", "decoder_norm"])
def test_unknown_norm_is_rejected_by_name(field):
  with pytest.raises(ValueError, match=field):
    Magvit2Config.from_dict(dict(TINY.to_dict(), **{field: "batch"}))


@pytest.mark.parametrize("latent_kernel, patch_changes_left_cells", [(3, True), (1, False)])
def test_latent_kernel_one_keeps_each_latent_cell_to_its_neighbourhood(latent_kernel, patch_changes_left_cells):
  # 4x down-sampling: with 1x1 blocks at the latent resolution a latent cell sees +-10 px
  # around its 4 px, so cells 0..3 (pixels 0..15) see up to column 25; with 3x3 blocks +-34 px.
  config = Magvit2Config(num_bits=6, base_channels=4, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                         spatial_downsample=(True, True), temporal_downsample=(False, False),
                         temporal_kernel_size=1, num_groups=2, encoder_norm="position",
                         encoder_latent_kernel_size=latent_kernel)
  assert _patch_changes_left_latents(config, 64, 40) == patch_changes_left_cells


def test_bad_encoder_latent_kernel_is_rejected_by_name():
  with pytest.raises(ValueError, match="encoder_latent_kernel_size"):
    Magvit2Config.from_dict(dict(TINY.to_dict(), encoder_latent_kernel_size=2))


@pytest.mark.parametrize("variant", ["", "quick", "gan", "photos", "fidelity"])
def test_demo_config_variants_build_valid_models(variant):
  config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments",
                                         "magvit2_demo.py"), variant)
  model = Magvit2Config.from_dict(config.model)
  if variant == "fidelity":  # the paper's latent grid at the demo's clip size
    assert model.latent_shape(17, 32, 32) == (5, 16, 16) and config.data.handwritings_per_digit == 0
