#!/usr/bin/env python3
"""bench/disk_probe.py: an independent witness of the disk, to run beside a latency benchmark.

    python3 bench/disk_probe.py FILE [--every-ms 5] [--slow-ms 10]

Writes 4 KiB with O_DIRECT|O_DSYNC at offset 0 of FILE every EVERY-MS milliseconds until
SIGTERM or SIGINT, and prints one line per write that took longer than SLOW-MS:
`stall START END` (Unix seconds, the write's start and end). At the end it prints
`probes N stalls K`. This VM's disk stalls for tens of milliseconds now and then with nothing
of ours running (2026-12-07: 71 and 78 ms with only this probe running), so a benchmark that
compares two latency distributions can place such stalls and tell them from what it measures.
"""

import argparse
import mmap
import os
import signal
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--every-ms", type=float, default=5)
    ap.add_argument("--slow-ms", type=float, default=10)
    args = ap.parse_args()
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    fd = os.open(args.file, os.O_RDWR | os.O_CREAT | os.O_DIRECT | os.O_DSYNC, 0o644)
    buf = mmap.mmap(-1, 4096)
    n = stalls = 0
    try:
        while not stop:
            t0 = time.time()
            os.pwrite(fd, buf, 0)
            t1 = time.time()
            n += 1
            if (t1 - t0) * 1000 > args.slow_ms:
                stalls += 1
                print(f"stall {t0:.6f} {t1:.6f}", flush=True)
            time.sleep(args.every_ms / 1000)
    finally:
        os.close(fd)
        os.unlink(args.file)
        print(f"probes {n} stalls {stalls}", flush=True)


if __name__ == "__main__":
    main()
