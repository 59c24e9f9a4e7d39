"""Evaluation harness: scores generated clips against the embedded demo's ground truth.

Per clip (`scoring.score_clip`): digit identity (`digit_classifier`, trained on real digit
images only), motion direction/speed (`motion`, from the tracked sprite, `sprite`),
first-frame and masked-region fidelity (`faithfulness`), pitch and click timing
(`audio_scores`). Per set: Frechet distance (`frechet`) with a pluggable feature network
(`i3d` for FVD with user-supplied weights, `demo_features` trained here). Output:
`results` (results.json schema, TensorBoard, report.md); command: `evaluate_clips`.
"""
