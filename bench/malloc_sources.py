#!/usr/bin/env python3
"""Where a process's malloc calls come from, grouped by the first frames
outside libc and the Swift runtime (nghttp2 frames marked NG:).

Record while load runs (root, linux-perf; the probe is what --mallocs uses):
    perf probe -x $(ldd .build/release/meshgate | awk '/libc.so/{print $3}') malloc
    perf record -e probe_libc:malloc --call-graph dwarf,16384 -p PID -o malloc.data -- sleep 6
    perf script -i malloc.data -F ip,sym,dso > malloc.txt
Then:
    bench/malloc_sources.py malloc.txt --depth 4 --per-rpc 8.6 | swift demangle --simplified
--per-rpc scales the counts so they sum to a known mallocs/RPC figure (from
bench/run.sh --mallocs): perf drops stacks under load, so only shares are exact.
"""
import argparse
import collections
import re


def samples(path):
    current = []
    for line in open(path, errors="replace"):
        line = line.strip()
        if not line:
            if current:
                yield current
            current = []
            continue
        parts = line.split(" ", 1)
        if len(parts) < 2:
            continue
        match = re.match(r"(.*) \((.*)\)$", parts[1])
        current.append((match.group(1), match.group(2)) if match else (parts[1], "inlined"))
    if current:
        yield current


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("script_output")
    ap.add_argument("--depth", type=int, default=3, help="frames per source")
    ap.add_argument("--per-rpc", type=float, help="mallocs per RPC the samples stand for")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    counts = collections.Counter()
    total = 0
    for stack in samples(args.script_output):
        total += 1
        key = []
        for symbol, dso in stack:
            if "libc.so" in dso or "libswiftCore" in dso or symbol.startswith("__GI") \
                    or "swift_slowAlloc" in symbol or "swift_allocObject" in symbol:
                continue
            key.append(("NG:" if "nghttp2" in dso else "") + symbol)
            if len(key) >= args.depth:
                break
        counts[" <- ".join(key)] += 1
    print(f"{total} malloc samples")
    for key, n in counts.most_common(args.top):
        share = f"{n / total * args.per_rpc:6.2f}/RPC" if args.per_rpc else f"{100 * n / total:5.1f} %"
        print(f"{share} {n:8d}  {key}")


if __name__ == "__main__":
    main()
