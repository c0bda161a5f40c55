"""Cluster planning: per-GPU memory and step-time estimates of parallel layouts, and a search over them.

Pure arithmetic on the model's shape; nothing here builds a model or touches a device.
"""
