"""Serving a checkpoint: an OpenAI-compatible model server, the gateway in front of it, and their Prometheus metrics."""
