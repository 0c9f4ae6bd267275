"""`python -m faceserve.triton_models write [--repository DIR]`: the pipeline and rotate models' folders
(`config.pbtxt`, `configs/gpu.pbtxt`, `1/model.py`) written into the model repository, after `convert build`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceserve.settings import PROJECT_ROOT
from faceserve.triton_models import configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceserve.triton_models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write both models' folders into the repository")
    write.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    args = parser.parse_args(argv)
    print(f"wrote {', '.join(configs.write(args.repository))} to {args.repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
