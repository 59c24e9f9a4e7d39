"""MAGVIT-v2 at the paper's size: 17x128x128 -> (5, 16, 16) latents, K = 18 (262,144 codes).

    python -m vp_tokenizers.magvit2.train --config=experiments/magvit2_paper.py \
        --config.data.source=video_folder --config.data.path=/data/videos --workdir=/ckpt/magvit2

Widths follow MAGVIT-v2 (128 base channels, multipliers 1-2-2-4, 4 residual blocks per level):
spatial 8x, temporal 4x. Losses and optimiser as in the paper (videopoet.md section 2):
L2 5.0, perceptual 0.1 (ResNet-50 weights from --config.loss.perceptual.weights_path; set
perceptual_weight=0 to train without), adversarial 0.1, R1 10, LeCam 0.001, commitment 0.25,
entropy 0.1 annealed from 4x over 2000 steps at temperature 0.01, EMA 0.999, Adam 1e-4 with
betas (0, 0.99). Image-first: 100k image steps, then inflation and video training.
"""
import ml_collections


def get_config(arg=None):
  if arg:
    raise ValueError(f"magvit2_paper: no variants, got {arg!r}")
  c = ml_collections.ConfigDict()
  c.workdir = "/tmp/magvit2_paper"
  c.seed = 0
  c.log_every_steps = 100
  c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  c.model = dict(num_bits=18, base_channels=128, channel_multipliers=(1, 2, 2, 4), num_res_blocks=4,
                 spatial_downsample=(True, True, True), temporal_downsample=(False, True, True),
                 temporal_kernel_size=3, num_groups=32, encoder_norm="group", in_channels=3,
                 dtype="bfloat16")
  c.data = ml_collections.ConfigDict(dict(
      source="video_folder", path="", num_frames=17, height=128, width=128, fps=8.0, seed=0,
      held_out_fraction=0.01, max_clips=0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=400_000, image_steps=100_000, batch_size=256, image_batch_size=256,
      learning_rate=1e-4, warmup_steps=5_000, lr_schedule="constant", min_lr_ratio=1.0,
      adam_b1=0.0, adam_b2=0.99, grad_clip_norm=1.0, video_num_frames=0, ema_decay=0.999, checkpoint_every_steps=5_000, max_checkpoints=3))
  c.loss = ml_collections.ConfigDict(dict(
      reconstruction_weight=5.0, commitment_weight=0.25, entropy_weight=0.1,
      entropy_start_multiplier=4.0, entropy_anneal_steps=2_000, entropy_temperature=0.01,
      entropy_group_bits=9, perceptual_weight=0.1, adversarial_weight=0.1,
      adversarial_start_step=0, r1_gamma=10.0, lecam_weight=0.001,
      perceptual=ml_collections.ConfigDict(dict(network="resnet", weights_path="", frames_per_clip=0))))
  c.discriminator = ml_collections.ConfigDict(dict(
      base_channels=64, channel_multipliers=(2, 4, 4, 4, 4), learning_rate=1e-4))
  c.eval = ml_collections.ConfigDict(dict(every_steps=10_000, num_clips=256, batch_size=16,
                                          num_summary_clips=4))
  return c
