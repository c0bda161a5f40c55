"""Evaluation of checkpoints on local task files: multiple choice, exact match and perplexity.

The model-free parts (task registry, JSONL readers, prompts, answer extraction, metrics, the report)
live here so they can be tested without a model; scoring a model is the runner's job.
"""
