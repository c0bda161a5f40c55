"""Command line of the model server: `megatron-sota-serve --load <checkpoint> [--port 8000]` (tools/serve.py).

Loads the checkpoint once (one process at TP=1, or one rank per TP shard under torchrun: rank 0 serves HTTP, the others
follow its batches), starts the generation thread and serves the OpenAI API on uvicorn until interrupted. It wires the pieces together; what they do is in engine.py, app.py and chat.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.serving.cli")  # not __name__: that is "__main__" under -m


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a megatron_sota checkpoint over the OpenAI API (completions, chat)")
    parser.add_argument("--load", required=True, help="checkpoint directory (latest iteration) or iter_NNNNNNN/ directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="the `model` requests name (default: the --load path as given)")
    parser.add_argument("--max-batch", type=int, default=8, help="completions generated together (default 8)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="completions waiting at most; beyond it a request gets 503 with Retry-After (default 64)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long a batch waits for more requests to join it (default 5 ms)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    problems = [f"--{name.replace('_', '-')}: expected >= {low}, found {getattr(args, name)}"
                for name, low in (("max_batch", 1), ("max_queue", 1), ("batch_wait_ms", 0), ("port", 0))
                if getattr(args, name) < low]
    if problems:
        parser.error("; ".join(problems))
    return args


def run(args: argparse.Namespace) -> None:
    import uvicorn

    from megatron_sota.config.generation import generation_problems, read_generation_defaults
    from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
    from megatron_sota.inference.text_model import inference_session, load_text_model
    from megatron_sota.serving.app import ServedModel, build_app
    from megatron_sota.serving.chat import served_template
    from megatron_sota.serving.engine import Engine, follow, rank_share
    from megatron_sota.serving.metrics import ServerMetrics

    defaults = read_generation_defaults()
    problems = generation_problems(defaults)
    if problems:
        raise MegatronSotaError("the shipped conf/generation/default.yaml: " + "; ".join(problems))
    with inference_session() as (env, session):
        model, tokenizer = load_text_model(args.load, session)
        chat = served_template(model.job, tokenizer)
        stop_ids = [tokenizer.eod]
        if not chat.stop:  # a post-trained model ends its turns with one token
            stop_ids += tokenizer.tokenize(chat.template.end_of_turn)
        share = rank_share if env.world_size > 1 else None
        if env.rank != 0:
            follow(model, stop_ids, share)  # the other TP ranks run what rank 0's engine runs
            return
        metrics = ServerMetrics()
        engine = Engine(model, tokenizer, stop_ids, args.max_batch, args.max_queue, args.batch_wait_ms / 1000, metrics, share)
        served = ServedModel(
            name=args.served_model_name or args.load, root=os.path.abspath(resolve_checkpoint_dir(args.load, "--load")),
            tokenizer=tokenizer, context=model.job.model.max_position_embeddings, defaults=defaults, chat=chat,
        )
        app = build_app(served, engine, metrics)
        engine.start()
        try:
            log.info("serving %r from %s on http://%s:%d (TP=%d, batches of up to %d, queue of %d)", served.name,
                     served.root, args.host, args.port, env.world_size, args.max_batch, args.max_queue)
            uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")).run()
        finally:
            engine.stop()


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        run(args)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
