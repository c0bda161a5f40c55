"""The Trainer's per-step duties, one callback each: health, metrics, validation, evaluation, exports, checkpoints, preemption.

`standard_callbacks` (training/trainer.py) lists them in the order a step needs them; each must
leave the others' state alone.
"""
