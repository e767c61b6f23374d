#!/usr/bin/env python
"""Generate the copy-paste instance-segmentation set (COCO JSON + images), deterministic by seed.

    python tools/make_copy_paste_coco.py --out data/copy_paste --train 512 --val 128 --seed 0 --size 256

Writes ``OUT/{train,val}/*.jpg`` and ``OUT/annotations/instances_{train,val}.json``; train with
``python tools/train.py ... data=coco data.root=OUT`` (or ``data=copy_paste_coco``, which generates into a cache).
See :mod:`tasks.data.copy_paste`.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from tasks.data.copy_paste import generate
from zoo.errors import exit_on_config_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=512, help="training images (default 512)")
    parser.add_argument("--val", type=int, default=128, help="validation images (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--size", type=int, default=256, help="side of the square images (default 256)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    parser.add_argument(
        "--fashion-mnist", default=None, help="folder of the Fashion-MNIST IDX files (default: Debian's)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with exit_on_config_error():
        paths = generate(
            args.out, args.train, args.val, size=args.size, seed=args.seed,
            fashion_mnist_root=args.fashion_mnist, image_format=args.format,
        )  # fmt: skip
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
