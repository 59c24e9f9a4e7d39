"""The trainer's adversarial path: the start-step gate, what the discriminator step computes,
that the discriminator learns, and that its state survives a checkpoint and a restart.

All tests share one short run of `experiments/magvit2_demo.py:quick,gan` at the tiny sizes of
test_magvit2_tokenizer_api.py (5x16x16 clips, 4 base channels), one clip per step, with the
adversarial loss starting at step 2. Batch size 1 makes each logged logit mean the logit
itself, so the step's metrics can be checked against the loss formulas by hand.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vp_jax import checkpointing
from vp_jax import partitioning
from vp_jax.config import load_config_file
from vp_tokenizers.magvit2 import data as data_lib
from vp_tokenizers.magvit2 import train
from vp_tokenizers.magvit2.discriminator import Discriminator
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config

_DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "magvit2_demo.py")
_START = 2      # loss.adversarial_start_step
_STEPS = 20     # steps of the shared run


def _gan_config():
  """quick,gan at the tiny sizes, with every knob the thresholds below were measured at pinned,
  so tuning the demo's defaults does not move them."""
  config = load_config_file(_DEMO_CONFIG, "quick,gan")
  config.model.update(base_channels=4, num_groups=2, num_bits=6)
  config.data.update(num_frames=5, height=16, width=16)
  # Video phase only, one clip per step, a constant learning rate after warm-up (so a run
  # resumed with a larger num_steps continues on the same schedule), no short training clips.
  config.train.update(batch_size=1, image_steps=0, num_steps=_STEPS, learning_rate=1e-3, warmup_steps=1,
                      lr_schedule="constant", video_num_frames=0, adam_b1=0.9, adam_b2=0.99,
                      grad_clip_norm=1.0)
  # LeCam at 0.1 (not 0.001) so its share of the discriminator gradient is measurable; the
  # discriminator at the generator's learning rate so a dozen steps show it learning.
  config.loss.update(reconstruction_weight=5.0, commitment_weight=0.25, entropy_weight=0.1,
                     adversarial_weight=0.1, adversarial_start_step=_START, r1_gamma=10.0,
                     lecam_weight=0.1)
  config.discriminator.update(base_channels=4, channel_multipliers=(2, 4), learning_rate=1e-3)
  return config


def _leaves_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _max_abs_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _adam_mu(opt_state):
  """The first-moment tree of `train.make_optimizer`'s chain(clip, adam) state."""
  return opt_state[1][0].mu


@pytest.fixture(scope="module")
def gan_run():
  """states[i] is the state before step i; metrics[i] is what step i logged. One fixed clip.

  The initial state is drawn with an 'rbg' key: compiling the initialiser with the default
  threefry key costs ~25 s of CPU (one threefry per parameter), with rbg ~5 s.
  """
  config = _gan_config()
  phase = train.make_phase("video", config, Magvit2Config.from_dict(config.model), None)
  batch = data_lib.batch_of_clips(data_lib.make_source(config.data, "train"), 0, 1)
  step = jax.jit(phase.train_step)
  states, metrics = [jax.jit(phase.init_state)(jax.random.key(config.seed, impl="rbg"))], []
  for _ in range(_STEPS):
    state, step_metrics = step(states[-1], batch)
    states.append(state)
    metrics.append(jax.device_get(step_metrics))
  return dict(config=config, phase=phase, batch=batch, step=step, states=states, metrics=metrics)


def test_adversarial_terms_stay_off_before_the_start_step(gan_run):
  states, config = gan_run["states"], gan_run["config"]
  no_gan = config.copy_and_resolve_references()
  no_gan.loss.adversarial_weight = 0.0
  plain_step = jax.jit(train.make_phase("video", no_gan, gan_run["phase"].model_config, None).train_step)
  for i in range(_START):
    # The discriminator is frozen: no update, no optimizer count, no LeCam EMA.
    for key in ("disc_params", "disc_opt_state", "lecam_ema"):
      assert _leaves_equal(states[i + 1][key], states[0][key]), (i, key)
    # The generator takes exactly the step it takes with adversarial_weight = 0.
    plain, _ = plain_step(states[i], gan_run["batch"])
    assert _max_abs_diff(plain["params"], states[i + 1]["params"]) < 1e-7
    assert _max_abs_diff(plain["opt_state"], states[i + 1]["opt_state"]) < 1e-8
  # From the start step on the adversarial gradient reaches the generator.
  plain, _ = plain_step(states[_START], gan_run["batch"])
  assert _max_abs_diff(_adam_mu(plain["opt_state"]), _adam_mu(states[_START + 1]["opt_state"])) > 1e-7
  assert _max_abs_diff(plain["params"], states[_START + 1]["params"]) > 1e-5


def test_discriminator_trains_and_every_adversarial_term_is_finite_once_started(gan_run):
  states, metrics = gan_run["states"], gan_run["metrics"]
  for m in metrics:
    for key in ("loss", "generator_adversarial", "discriminator", "r1", "lecam"):
      assert np.isfinite(m[key]), (key, m)
  last = states[-1]
  assert _max_abs_diff(last["disc_params"], states[0]["disc_params"]) > 5e-4
  assert int(last["disc_opt_state"][1][0].count) == _STEPS - _START
  assert np.all(np.asarray(last["lecam_ema"]) != 0)


def test_step_metrics_match_the_loss_formulas_on_the_logged_logits(gan_run):
  states, metrics = gan_run["states"], gan_run["metrics"]
  softplus = lambda x: np.log1p(np.exp(x))
  for i in range(_START, _STEPS):
    m = metrics[i]
    real, fake = float(m["logits_real"]), float(m["logits_fake"])  # batch 1: the logits themselves
    ema_real, ema_fake = np.asarray(states[i]["lecam_ema"], np.float64)
    np.testing.assert_allclose(m["discriminator"], softplus(-real) + softplus(fake), rtol=1e-5)
    # The generator is scored by the same (pre-update) discriminator on the same reconstruction.
    np.testing.assert_allclose(m["generator_adversarial"], softplus(-fake), rtol=1e-5)
    np.testing.assert_allclose(
        m["lecam"], max(real - ema_fake, 0.0)**2 + max(ema_real - fake, 0.0)**2, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(states[i + 1]["lecam_ema"],
                               0.99 * np.array([ema_real, ema_fake]) + 0.01 * np.array([real, fake]),
                               rtol=1e-5, atol=1e-9)
  assert metrics[-1]["lecam"] > 0 and metrics[-1]["r1"] > 0


def test_discriminator_gradient_is_that_of_its_loss_plus_r1_and_lecam(gan_run):
  """Recomputes the discriminator objective outside the trainer and compares its clipped
  gradient with the one the step fed to Adam, read back from Adam's first moment."""
  config, phase, states = gan_run["config"], gan_run["phase"], gan_run["states"]
  lc, dc = config.loss, config.discriminator
  i = _STEPS - 2
  state = states[i]
  disc = Discriminator(dc.base_channels, tuple(dc.channel_multipliers), config.model.dtype)
  real = jnp.asarray(gan_run["batch"], jnp.float32) / 127.5 - 1.0

  @jax.jit
  def objective_gradients(state):
    fake = Magvit2(phase.model_config).apply(state["params"], real)[0]
    ema_real, ema_fake = state["lecam_ema"][0], state["lecam_ema"][1]

    def terms(disc_params):
      apply = lambda x: disc.apply(disc_params, x)
      r, f = apply(real), apply(fake)
      gradient_at_real = jax.grad(lambda x: jnp.sum(apply(x)))(real)
      return {"logistic": jnp.mean(jax.nn.softplus(-r) + jax.nn.softplus(f)),
              "r1": 0.5 * lc.r1_gamma * jnp.sum(jnp.square(gradient_at_real)),
              "lecam": lc.lecam_weight * (jnp.square(jax.nn.relu(r[0] - ema_fake))
                                          + jnp.square(jax.nn.relu(ema_real - f[0])))}
    return jax.jacrev(terms)(state["disc_params"])

  grads = objective_gradients(state)
  total = jax.tree.map(lambda a, b, c: a + b + c, grads["logistic"], grads["r1"], grads["lecam"])
  clip = lambda g: optax.clip_by_global_norm(config.train.grad_clip_norm).update(g, optax.EmptyState())[0]
  b1 = config.train.adam_b1
  fed_to_adam = jax.tree.map(lambda new, old: (new - b1 * old) / (1 - b1),
                             _adam_mu(states[i + 1]["disc_opt_state"]), _adam_mu(state["disc_opt_state"]))
  scale = float(optax.global_norm(fed_to_adam))
  assert scale > 0
  assert _max_abs_diff(fed_to_adam, clip(total)) < 1e-5 * scale
  # Each regulariser is visible at that tolerance: dropping one breaks the match.
  for dropped in ("r1", "lecam"):
    partial = jax.tree.map(lambda t, d: t - d, total, grads[dropped])
    assert _max_abs_diff(fed_to_adam, clip(partial)) > 1e-3 * scale, dropped


def test_discriminator_learns_to_score_the_real_clip_above_its_reconstruction(gan_run):
  metrics = gan_run["metrics"]
  first = metrics[_START]
  gap = lambda m: m["logits_real"] - m["logits_fake"]
  for m in metrics[-3:]:
    assert gap(m) > 0 and gap(m) > gap(first) + 0.1, (first, m)
    assert m["discriminator"] < first["discriminator"] - 0.05, (first, m)
  # ... although the generator reconstructs better meanwhile, so the fake gets harder to tell apart.
  assert metrics[-1]["l2"] < 0.6 * metrics[0]["l2"]


def test_checkpoint_restores_the_discriminator_state_instead_of_reinitialising_it(gan_run, tmp_path):
  config, states = gan_run["config"], gan_run["states"]
  saved_at = _STEPS - 2
  saved = states[saved_at]
  directory = str(tmp_path / "checkpoints")
  with checkpointing.Checkpointer(directory, async_save=False) as ckpt:
    ckpt.save(saved_at, saved, metadata=train.checkpoint_metadata(gan_run["phase"], saved_at, config),
              force=True)

  # A restart: new phase, partitioner and checkpointer, restored the way `train.train` resumes.
  phase = train.make_phase("video", config, Magvit2Config.from_dict(config.model), None)
  partitioner = partitioning.Partitioner(dict(config.mesh), allow_unnamed_params=True)
  with checkpointing.Checkpointer(directory) as ckpt:
    assert ckpt.latest_step() == saved_at
    assert ckpt.restore_metadata(saved_at)["phase"] == "video"
    abstract, _ = partitioner.abstract_sharded(phase.init_state, jax.random.PRNGKey(config.seed))
    restored, _ = ckpt.restore(abstract, saved_at)

  fresh = states[0]
  for key in ("disc_params", "disc_opt_state", "lecam_ema"):
    assert _leaves_equal(restored[key], saved[key]), key
    assert not _leaves_equal(restored[key], fresh[key]), key
  assert int(restored["disc_opt_state"][1][0].count) == saved_at - _START


@pytest.mark.slow
def test_train_resumed_in_a_new_process_continues_the_discriminator_it_saved(tmp_path):
  """`train.train` stopped at step 4 and restarted to step 6 on the same workdir ends where
  two more steps from the step-4 checkpoint end; a re-initialised discriminator would not."""
  workdir = str(tmp_path / "run")
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.dirname(__file__)!r})
      from test_magvit2_train_gan import _gan_config
      from vp_tokenizers.magvit2 import train
      config = _gan_config()
      config.train.num_steps = int(sys.argv[1])
      config.eval.num_clips = 2
      train.train(config, {workdir!r})
  """)
  for num_steps in (4, 6):
    result = subprocess.run([sys.executable, "-c", script, str(num_steps)], capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in result.stdout

  config = _gan_config()
  phase = train.make_phase("video", config, Magvit2Config.from_dict(config.model), None)
  partitioner = partitioning.Partitioner(dict(config.mesh), allow_unnamed_params=True)
  abstract, _ = partitioner.abstract_sharded(phase.init_state, jax.random.PRNGKey(config.seed))
  with checkpointing.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    assert ckpt.all_steps() == [4, 6]
    at_4, metadata = ckpt.restore(abstract, 4)
    at_6, _ = ckpt.restore(abstract, 6)
  assert int(at_4["disc_opt_state"][1][0].count) == 4 - _START
  step = jax.jit(phase.train_step)
  source = data_lib.make_source(config.data, "train")
  state, data_index = jax.device_put(at_4, jax.devices()[0]), int(metadata["data_index"])
  for _ in range(2):
    state, _ = step(state, data_lib.batch_of_clips(source, data_index, config.train.batch_size))
    data_index += config.train.batch_size
  for key in ("disc_params", "disc_opt_state", "lecam_ema", "params"):
    assert _max_abs_diff(state[key], at_6[key]) < 1e-6, key
