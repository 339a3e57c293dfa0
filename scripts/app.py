#!/usr/bin/env python
"""Serve the interactive app for a saved model folder or a Hub id (needs the extra: pip install -e ".[app]").

    python scripts/app.py --model outputs/demo --examples data/bps/test
    python scripts/app.py --model USER/NAME --host 0.0.0.0 --port 7860
"""

import logging
import sys
from dataclasses import dataclass, field

from bps_vit.cli import DISABLE_TQDM_HELP, EXIT_USAGE, UsageError, parse_args, set_library_progress_bars


@dataclass
class AppArguments:
    """Arguments of scripts/app.py."""

    model: str = field(metadata={"help": "Saved model folder (outputs/<run>) or Hub id of a fine-tuned BPS model."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0 to share on the LAN)."})
    port: int | None = field(default=None, metadata={"help": "Port (default: Gradio's, 7860 or the next free one)."})
    threads: int | None = field(
        default=None,
        metadata={"help": "torch threads (default: torch's); 1 answers a small model fastest on a busy CPU."},
    )
    examples: str | None = field(
        default=None,
        metadata={"help": "Folder of example images (class subfolders allowed); default <model>/examples."},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": DISABLE_TQDM_HELP})


def main(argv=None) -> int:
    try:
        (args,) = parse_args([AppArguments], argv)
    except UsageError:  # an unknown flag or config key: its one `error:` line is already printed
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.disable_tqdm:
        set_library_progress_bars(False)  # a Hub model's download bars
    try:
        import gradio  # noqa: F401  (an optional extra)
    except ImportError as err:
        print(f"error: the app needs Gradio ({err}); install it with: pip install -e \".[app]\"", file=sys.stderr)
        return 1
    from bps_vit.app import serve
    from bps_vit.model import ModelLoadError

    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1; got {args.threads}", file=sys.stderr)
            return EXIT_USAGE
        import torch

        torch.set_num_threads(args.threads)
    try:
        serve(args.model, host=args.host, port=args.port, examples=args.examples)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
