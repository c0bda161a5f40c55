"""CLI: held-out preference accuracy per task of a DPO model (against its reference) or a reward model, from HF exports.

  python tools/preference_accuracy.py --policy <hf dir> --reference <hf dir> --files valid.jsonl [--beta 0.1] [--json]
  python tools/preference_accuracy.py --reward <hf dir> --files valid.jsonl [--json]

Argument parsing and printing only; the work is megatron_sota.posttrain.preference_accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.preference_accuracy import dpo_table, reward_model_table, table_text
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.cli.preference_accuracy")  # not __name__: that is "__main__" under -m


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="HF export of the DPO model (its tokenizer and chat template)")
    parser.add_argument("--reference", help="HF export of the model DPO started from")
    parser.add_argument("--reward", help="HF export of a reward model (instead of --policy and --reference)")
    parser.add_argument("--files", nargs="+", required=True, help="preference JSONL files (held-out pairs)")
    parser.add_argument("--beta", type=float, default=0.1, help="posttrain.beta of the DPO run (default 0.1)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if bool(args.reward) == bool(args.policy or args.reference) or (args.policy is None) != (args.reference is None):
        parser.error("give either --reward, or both --policy and --reference")
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        if args.reward:
            table = reward_model_table(args.reward, args.files)
        else:
            table = dpo_table(args.policy, args.reference, args.files, args.beta)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 2
    print(json.dumps(table, indent=2) if args.json else table_text(table))  # the command's product
    return 0


if __name__ == "__main__":
    sys.exit(main())
