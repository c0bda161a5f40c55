"""`megatron-sota-gateway`: runs the gateway (API keys, rate limits, cache, screens, metrics) in front of an upstream.

  megatron-sota-gateway --upstream http://127.0.0.1:8000 --api-keys-file keys.txt --port 8080
  megatron-sota-gateway --upstream http://vllm:8000 --api-keys-file keys.txt --redis-url redis://redis:6379/0 \\
      --rate 2 --burst 40 --cache-ttl 600 --model-revision llama-8b@iter_0050000

The keys file holds one API key per line; blank lines and lines starting with # are skipped.
The upstream's own key, when it needs one, is read from the environment variable MEGATRON_SOTA_UPSTREAM_API_KEY.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.serving.gateway.cli")  # not __name__: that is "__main__" under -m


def read_api_keys(path: str) -> frozenset[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise MegatronSotaError(f"--api-keys-file {path}: expected a readable file of API keys, found {e.strerror}") from e
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    problems = [f"{path}:{i + 1}: expected one key without spaces, found {line.strip()!r}"
                for i, line in enumerate(lines) if len(line.split()) > 1 and not line.strip().startswith("#")]
    if not keys:
        problems.append(f"{path}: expected at least one API key, found none")
    if problems:
        raise MegatronSotaError("--api-keys-file: " + "; ".join(problems))
    return frozenset(keys)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--upstream", required=True, help="base URL of the OpenAI-compatible upstream (no /v1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--api-keys-file", required=True, help="file of client API keys, one per line")
    parser.add_argument("--redis-url", default=None,
                        help="redis://host:port/db for buckets and cache shared by replicas (default: in this process)")
    parser.add_argument("--rate", type=float, default=1.0, help="requests per second per key, on average (default 1)")
    parser.add_argument("--burst", type=float, default=20, help="requests a key may send at once (default 20)")
    parser.add_argument("--cache-ttl", type=float, default=300.0, help="seconds a cached response lives; 0: no cache (default 300)")
    parser.add_argument("--model-revision", default="unversioned",
                        help="part of every cache key: change it when the upstream's weights change")
    parser.add_argument("--special-token", action="append", default=[],
                        help="a special or role token of the upstream's tokenizer to refuse in prompts (repeatable)")
    parser.add_argument("--max-output-chars", type=int, default=100_000, help="longer outputs are cut (default 100000)")
    parser.add_argument("--no-toxicity", action="store_true", help="skip the toxicity model on outputs")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def settings_from_args(args):
    from megatron_sota.serving.gateway.app import GatewaySettings

    return GatewaySettings(
        upstream_url=args.upstream, api_keys=read_api_keys(args.api_keys_file), rate_per_second=args.rate,
        burst=args.burst, redis_url=args.redis_url, cache_ttl_seconds=args.cache_ttl, model_revision=args.model_revision,
        special_tokens=tuple(args.special_token), upstream_api_key=os.environ.get("MEGATRON_SOTA_UPSTREAM_API_KEY"),
        max_output_chars=args.max_output_chars, check_toxicity=not args.no_toxicity,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        settings = settings_from_args(args)
        from megatron_sota.serving.gateway.app import build_gateway_app

        app = build_gateway_app(settings)
    except MegatronSotaError as e:
        log.error("%s", e)
        return 2
    import uvicorn

    log.info("gateway: %d API keys, upstream %s, %s store, listening on %s:%d", len(settings.api_keys),
             settings.upstream_url, "Redis" if settings.redis_url else "in-memory", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
