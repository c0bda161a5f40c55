"""Post-training (SFT, reward model, DPO) on the pretraining stack: objectives plugged into the same trainer.

Nothing outside this package and the entry points imports it; it builds on training/, model/, data/ and config/.
"""
