"""MAGVIT-v2 tokenizer for the embedded demo, trainable on a 2-core CPU.

    python -m vp_tokenizers.magvit2.train --config=experiments/magvit2_demo.py --workdir=/tmp/magvit2_demo

17 frames of 32x32 -> latents (5, 8, 8): spatial 4x, temporal 4x, 8 bits (256 codes) per token.
Why 8 bits: the LM of the main job learns fewer, steadier ids better than more faithful ones.
With 10 bits, 61-73% of cells changed id between latent frames; with 8, 40-43%. Held-out
video PSNR stayed level (24.0 dB with 99% of codes used, against 23.6 dB / 76%), and in the
full default job (2-core CPU, one 64-clip run each) the LM's teacher-forced text-to-video loss
fell from 0.72 to 0.52 nats, the captioned digit rose from 0.58 to 0.77, the captioned
direction from 0.13 to 0.30 and video-to-audio pitch from 0.41 to 0.53, while the
continuation's digit fell from 0.53 to 0.27 and image-to-video's from 0.42 to 0.38. The
figures below were measured at 10 bits.
Schedule: 900 image steps (batch 16), inflation to causal 3D, 300 video steps on 9-frame
clips (batch 8; the causal model then runs on 17-frame clips), each phase with its own
warm-up + cosine learning rate; fresh demo clips every step (data.max_clips=0).
Perceptual loss: off (`--config.loss.perceptual_weight=1.0` turns it on). The demo's network
for it is a small digit classifier trained first on real train-split frames of every training
handwriting (tokenizers/magvit2/demo_perceptual.py; the demo's stand-in for MAGVIT-v2's ImageNet
ResNet-50). At weight 1.0 (against L2's 5.0) it kept unseen handwritings readable as their
digit: a linear probe on the sprite's tokens (vp_jax/evaluation/token_probe.py) read 0.875 /
0.875 of the test / validation clips against 0.80 / 0.72, the digit ceiling on real test clips
after encode+decode rose from 0.73 to 0.80 and held-out video PSNR from 22.8 to 23.3 dB. But
the main job's LM learned its ids worse in the CPU budget (validation loss at step 1800 0.454
against 0.246): video-to-audio pitch 0.61 / 0.59 against 0.52 / 0.55, text-to-video digit
0.875 / 0.875 against 0.97 / 0.91, image-to-video digit 0.30 against 0.61 (one run each on
the slow 2-core host; docs/demo_results.md). At weight 0.25 (the network then trained 800 steps of
batch 128, and every frame scored) the LM learned the ids as well as without the loss, and
video-to-audio pitch rose to 0.69 / 0.66 (0.67 over both against 0.54) with the other tasks
about the same or better, but this stage took 1729 s against 1134 s. With this config's cheaper
settings (600 steps of batch 64; 2 frames of each video clip) it took 1285 s, and video-to-audio
scored 0.70 / 0.58 (0.64), T2V digit 0.91 / 0.98, while the LM learned the ids less well
(validation loss at step 1800 0.315 against 0.246) and continuation direction fell to 0.86. It
stays off: on a third 2-core machine (Intel, AVX-512), paired with the default from empty
workdirs, it added 86 s to this stage and lowered video-to-audio to 0.59 / 0.66 (0.73 / 0.69
without) and text-to-video digit to 0.78 / 0.78 (0.92 / 0.97), below the 0.8 target; the LM
again learned the ids worse (validation loss at step 1800 0.370 against 0.258).
Ids the LM can learn: the losses keep every LFQ bit far from zero (commitment 1.0) without
pushing plain background onto spare codes (entropy 0.05), and the encoder normalises each
position alone (model.encoder_norm='position'). With the paper's commitment 0.25 and entropy
0.1, a cell of a photo's fixed background far from the digit got that photo's usual id only
54% of the time (the digit elsewhere in the frame flipped low-margin bits; the norm switch
alone left it at 53%); with these settings 94% (bench/magvit2_id_stability.py), and held-out
video PSNR rose from 23.8 to 24.9 dB (2-core CPU, same steps). Code usage falls from 100% to
~85%: the spare codes had been encoding noise. Since the demo draws each digit in 4
handwritings per split (data_pipelines/demo/clips.py), the tokenizer trains on the LM's own
clips and is scored on held-out clips of unseen handwriting: 23.6 dB, 76% of codes (trained on
every handwriting it scores 24.9 dB, but the LM's text-to-video digit score falls from 0.73 to
0.28 on its codes). Where the fidelity goes: the image phase ends at 25.0 dB here (28.5 dB on
every handwriting; 32.5 dB with 2x spatial down-sampling), and inflation to the causal video
model drops every variant to ~20.5 dB, from which 300 video steps climb back to ~25 dB.
Through time (bench/magvit2_id_stability.py): between latent frames 77% of the cells at
least 2 cells from the digit keep their id and 65% of the digit's cells reappear shifted
along its motion. `model.encoder_latent_kernel_size=1` (1x1 blocks at the latent
resolution) raises these to 89% and 72% at the same PSNR (23.9 dB, 48% of codes); an LM
trained on its ids drew the captioned digit 0.81 of the time (0.75 here) but carried the
given digit through image-to-video only 0.17 of the time (0.47), motion direction unchanged
(0.28), one 64-clip run each, so it stays an option.
Variants (`--config=experiments/magvit2_demo.py:<variant>`):
  (none)   the demo tokenizer on the embedded demo clips: image-first, then video; L2 + LFQ.
  quick    a tiny model and a few steps, for tests and smoke runs.
  gan      the demo tokenizer plus discriminator (non-saturating, R1, LeCam).
  photos   trains on scikit-image photos moved by pans and zooms instead of the demo clips.
  fidelity the paper's latent grid (5, 16, 16) for 17x32x32 clips (2x spatial, 4x temporal
           down-sampling; widths 16-32-32), trained on every handwriting of the training
           digits, 900 image + 900 video steps. Held-out clips of unseen handwriting: 30.1 dB
           PSNR, SSIM 0.953, 96.6% of the 1024 codes used; the whole command took 9m49s on the
           quiet 2-core dev machine (image phase 31.8 dB after 1m30s). The main job keeps the
           default: 4x fewer tokens per clip is what lets its CPU-sized LM train in minutes.
"""
import ml_collections


def get_config(arg=None):
  variants = set(filter(None, (arg or "").split(",")))
  unknown = variants - {"quick", "gan", "photos", "fidelity"}
  if unknown:
    raise ValueError(f"magvit2_demo: unknown variants {sorted(unknown)}")
  c = ml_collections.ConfigDict()
  c.workdir = "/tmp/magvit2_demo"
  c.seed = 0
  c.log_every_steps = 25
  c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}

  c.model = dict(num_bits=8, base_channels=16, channel_multipliers=(1, 2, 4), num_res_blocks=1,
                 spatial_downsample=(True, True), temporal_downsample=(True, True),
                 temporal_kernel_size=3, num_groups=8, encoder_norm="position", decoder_norm="group",
                 in_channels=3, dtype="float32")

  c.data = ml_collections.ConfigDict(dict(
      source="demo", path="", num_frames=17, height=32, width=32, fps=8.0, seed=0,
      held_out_fraction=0.1, max_clips=0, handwritings_per_digit=4))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=1200, image_steps=900, batch_size=8, image_batch_size=16, learning_rate=2e-3,
      warmup_steps=50, lr_schedule="cosine", min_lr_ratio=0.05, adam_b1=0.9, adam_b2=0.99,
      grad_clip_norm=1.0, video_num_frames=9, ema_decay=0.99,
      checkpoint_every_steps=250, max_checkpoints=2))

  c.loss = ml_collections.ConfigDict(dict(
      reconstruction_weight=5.0, commitment_weight=1.0, entropy_weight=0.05,
      entropy_start_multiplier=4.0, entropy_anneal_steps=500, entropy_temperature=0.01,
      entropy_group_bits=12, perceptual_weight=0.0, adversarial_weight=0.0,
      adversarial_start_step=0, r1_gamma=10.0, lecam_weight=0.001,
      # With perceptual_weight > 0: the demo's own network (tokenizers/magvit2/demo_perceptual.py),
      # trained first on train_clips real train-split clips for train_steps; '' caches it in the
      # workdir. MAGVIT-v2's ResNet-50: network="resnet", weights_path=".../model.safetensors".
      # frames_per_clip: 2 random frames of each 9-frame training clip (0 = all of them).
      perceptual=ml_collections.ConfigDict(dict(network="demo_digits", weights_path="",
                                                train_clips=1500, train_steps=600, frames_per_clip=2))))

  c.discriminator = ml_collections.ConfigDict(dict(
      base_channels=16, channel_multipliers=(2, 4), learning_rate=1e-4))

  c.eval = ml_collections.ConfigDict(dict(every_steps=1200, num_clips=64, batch_size=16,
                                          num_summary_clips=4))

  if "fidelity" in variants:
    # The second level transition only halves time; inflation starts its convs as identities.
    c.model.update(spatial_downsample=(True, False), channel_multipliers=(1, 2, 2), num_bits=10)
    c.data.handwritings_per_digit = 0
    c.train.num_steps = 1800
    c.eval.every_steps = c.train.num_steps
  if "photos" in variants:
    c.data.source = "photo_pans"
  if "quick" in variants:
    c.model.update(base_channels=8, num_groups=4, num_bits=6)
    c.data.source = "photo_pans"
    c.train.update(num_steps=6, image_steps=2, batch_size=2, image_batch_size=2,
                   checkpoint_every_steps=3, warmup_steps=1, lr_schedule="constant",
                   video_num_frames=0)
    c.loss.entropy_anneal_steps = 4
    c.loss.perceptual.update(train_clips=4, train_steps=2)
    c.discriminator.base_channels = 4
    c.eval.update(every_steps=3, num_clips=4, batch_size=2, num_summary_clips=2)
    c.log_every_steps = 1
  if "gan" in variants:
    c.loss.adversarial_weight = 0.1
    c.loss.adversarial_start_step = c.train.image_steps
  return c
