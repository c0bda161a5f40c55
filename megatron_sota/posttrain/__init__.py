"""Post-training on the pretraining stack: supervised fine-tuning, reward models and DPO as objectives plugged into
the same trainer (`python -m megatron_sota.posttrain`).

Only entry points import this package; it may import training/, model/, data/, config/, checkpointing/, conversion/.
"""
