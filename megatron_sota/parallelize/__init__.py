"""Applies parallelism to built model chunks and runs them through megatron-core's pipeline schedules.

Above model/ and below training/: it wraps and schedules models; it must not build them or their optimizer.
"""
