"""A sender process for tests/test_crash.py and the multi-process tests.

    python tests/crash_worker.py KIT STATE [--count N] [--min-size M] [--max-size S]
                                           [--seed X] [--batch B]
                                           [--give-every G --give-to R --give-size S]

Opens the member (which runs the erase sweep), prints `ready`, then seals messages of
random length M..S (N of them, or until the pad runs out; lengths and bytes follow
from --seed) and writes one line per sealed message to stdout ONLY after `seal` (or
`seal_many`) has returned:

    counter offset length sealed_hex

With --give-every G (format 2), after every G groups it also gives S bytes to member R
(`Member.give`) and, once that returned, prints the grant and its message:

    gift start end counter offset length sealed_hex

Each line is written with a single os.write of under PIPE_BUF bytes, so a SIGKILL
leaves only whole lines. The parent kills it at random moments.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

from ghostline.errors import GiftTooLarge, JournalFullError, PadExhaustedError
from ghostline.state.member import Member


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kit")
    parser.add_argument("state")
    parser.add_argument("--count", type=int, default=0, help="0: until the pad runs out")
    parser.add_argument("--min-size", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1, help="seal_many groups of this size")
    parser.add_argument("--give-every", type=int, default=0, help="0: never give")
    parser.add_argument("--give-to", type=int, default=1)
    parser.add_argument("--give-size", type=int, default=256)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    member = Member.open(args.kit, state_path=args.state)
    out = sys.stdout.fileno()
    os.write(out, b"ready\n")
    sent = 0
    groups = 0
    try:
        while args.count == 0 or sent < args.count:
            groups += 1
            if args.give_every and groups % args.give_every == 0:
                gift = member.give(args.give_to, args.give_size)
                g, e = gift.grant, gift.entry
                line = f"gift {g.start} {g.end} {e.counter} {e.offset} {e.length} {e.sealed.hex()}"
                os.write(out, f"{line}\n".encode())
            group = min(args.batch, args.count - sent) if args.count else args.batch
            sizes = [rng.randint(args.min_size, args.max_size) for _ in range(group)]
            payloads = [rng.randbytes(size) for size in sizes]
            entries = member.seal_many(payloads)
            for e in entries:
                os.write(out, f"{e.counter} {e.offset} {e.length} {e.sealed.hex()}\n".encode())
            sent += len(entries)
    except (PadExhaustedError, GiftTooLarge, JournalFullError):
        os.write(out, b"exhausted\n")
    member.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
