#!/usr/bin/env python
"""Times greedy generation from a checkpoint with and without the KV cache, side by side, at several lengths.

Both modes run in the same process on the same prompt, alternating, and must produce the same
tokens. With the cache the time per token should stay flat as the output grows (linear total);
recomputing the whole sequence each step grows per-token time with length (quadratic total).

  python tools/generation_benchmark.py --load .quickstart/tp1/checkpoints --lengths 64 128 256

A developer's script: it imports the installed megatron_sota (pip install -e . in a checkout).
"""

from __future__ import annotations

import argparse

from megatron_sota.quiet import quiet_megatron

quiet_megatron()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", required=True, help="checkpoint directory or iter_NNNNNNN/ directory")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256], help="new tokens per run")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
    from megatron_sota.inference.generation import generate
    from megatron_sota.inference.sampling import SamplingSettings
    from megatron_sota.runtime.session import distributed_session

    if args.threads:
        torch.set_num_threads(args.threads)
    greedy = SamplingSettings(temperature=0.0, repetition_penalty=1.0)
    with distributed_session(inference_parallel(1), "cpu") as session:
        model = load_inference_model(args.load, session.device, "fp32")
        prompt = torch.randint(0, model.vocab_size, (args.batch, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
        generate(model, prompt, 8, greedy)  # warm-up
        print(f"{'new tokens':>10} {'cached tok/s':>13} {'uncached tok/s':>15} {'speed-up':>9} {'cached ms/tok':>14} {'uncached ms/tok':>16} {'same tokens':>12}")
        for length in args.lengths:
            cached = generate(model, prompt, length, greedy, use_cache=True)
            uncached = generate(model, prompt, length, greedy, use_cache=False)
            tokens = length * args.batch
            print(
                f"{length:>10} {tokens / cached.seconds:>13.1f} {tokens / uncached.seconds:>15.1f} "
                f"{uncached.seconds / cached.seconds:>8.1f}x {1000 * cached.seconds / length:>14.2f} "
                f"{1000 * uncached.seconds / length:>16.2f} {str(cached.tokens == uncached.tokens):>12}"
            )


if __name__ == "__main__":
    main()
