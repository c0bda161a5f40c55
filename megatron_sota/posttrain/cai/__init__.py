"""Constitutional AI: a constitution of principles, critique-and-revision data for SFT, and AI preference labels.

The commands live in megatron_sota/cli/cai.py; this package must not parse command lines or print.
"""
