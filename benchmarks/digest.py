#!/usr/bin/env python
"""What checking a converted model's digest costs: sha256 throughput over a file in the page cache, and the
check at load with and without the recorded fingerprints (runtime/converted.py).

A converted directory's files are digested once when written. At a load, a file is read in full again only when
its size, mtime, ctime or inode changed since its last check; otherwise the check is a stat per file. This
prints the measured rate and what a full check costs for the converted copies of an 8B model (16-bit: 16.1 GB;
int4 with an int8 head: about 5.4 GB), from that rate.

Usage: python benchmarks/digest.py [--gib 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from longlm_cli.runtime import converted

EIGHT_B = {"16-bit": 16.06e9, "int4": 5.4e9}  # bytes: 8.03e9 parameters x 2; int4 groups plus an int8 head


def make_file(directory: Path, size: int) -> None:
    piece = os.urandom(64 << 20)
    with open(directory / "model.safetensors", "wb") as out:
        for _ in range(size // len(piece)):
            out.write(piece)


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the file digested (default 2)")
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="longlm-digest-") as name:
        directory = Path(name)
        make_file(directory, size)
        written = timed(lambda: converted.write_marker(directory))  # digests once, records the fingerprints
        stamped = min(timed(lambda: converted.damage(directory)) for _ in range(5))
        (directory / converted.VERIFIED).unlink()
        full = timed(lambda: converted.damage(directory))
    rate = size / full
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"file: {size / 1e9:.2f} GB in the page cache")
    print(f"digest at conversion: {written:.2f} s ({size / written / 1e9:.2f} GB/s)")
    print(f"check at load, full read: {full:.2f} s ({rate / 1e9:.2f} GB/s)")
    print(f"check at load, fingerprints unchanged: {stamped * 1e3:.2f} ms")
    for form, nbytes in EIGHT_B.items():
        print(f"8B {form} copy ({nbytes / 1e9:.1f} GB): a full check about {nbytes / rate:.1f} s at this rate")


if __name__ == "__main__":
    main()
