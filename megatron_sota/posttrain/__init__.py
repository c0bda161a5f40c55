"""Post-training on the pretraining stack: supervised fine-tuning, reward models and DPO
(`python -m megatron_sota.posttrain`).

Only entry points import this package; it may import training/, model/, data/, config/, checkpointing/, conversion/.
"""
