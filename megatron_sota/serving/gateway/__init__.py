"""The gateway in front of any OpenAI-compatible upstream: API keys, token buckets, a response cache, the prompt
screen, output checks and Prometheus counts of every decision. It never loads a model of its own."""
