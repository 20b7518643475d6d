#!/usr/bin/env python3
"""ktrace.py - per-kernel in-graph times from a kernel start trace.

The trace comes from a profiling build (`make CUDA=1 KTRACE=1`, see
src/backend/cuda/cuda_common.cuh): every kernel's block (0,0,0) records the
global timer when it passes its programmatic-dependent-launch wait, and
v4flash writes the records to $V4F_KTRACE_OUT at exit. A kernel passes its
wait when the kernels before it are done, so the time from one start to the
next is the in-graph time of a kernel on a serial chain (with two streams the
starts interleave: read the listing, not only the sums).

Inside a kernel, V4F_KT_POINT() (cuda_common.cuh) adds a stamp of block
(0,0,0) at that source line; the listing shows it as file:line between the
kernel starts, so the time from one stamp to the next is a phase of that
block (session 7 used it to split k_fa_mma's time into its phases). Each
stamp costs its thread a returning atomic (~0.3 us), so stamped phases read
longer than they run.

usage: tools/ktrace.py TRACE [STEP] [--list]
  STEP: which decode step, counted by k_step_prep starts (default -2: the
  last complete one). Kernel names are read from the source tree this script
  lives in (the line of each kernel's V4F_PDL_ENTRY), so run it on the tree
  the traced binary was built from.
"""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def kernel_lines():
    """(basename, line of V4F_PDL_ENTRY) -> kernel name."""
    names = {}
    cu_dir = os.path.join(ROOT, "src", "backend", "cuda")
    for fn in sorted(os.listdir(cu_dir)):
        if not fn.endswith(".cu"):
            continue
        lines = open(os.path.join(cu_dir, fn)).read().split("\n")
        for i, text in enumerate(lines):
            if "V4F_PDL_ENTRY()" not in text or "#define" in text:
                continue
            name = "?"
            for j in range(i, max(0, i - 120), -1):
                m = re.search(r"\b(k_[A-Za-z0-9_]+)\s*\(", lines[j])
                if m:
                    name = m.group(1)
                    break
            names[(fn, i + 1)] = name
    return names


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    listing = "--list" in sys.argv
    step = int(args[1]) if len(args) > 1 else -2
    names = kernel_lines()
    recs = []
    for line in open(args[0]):
        t, f, ln, grid, block, seq = line.split()
        name = names.get((os.path.basename(f), int(ln)), "%s:%s" % (os.path.basename(f), ln))
        recs.append((int(t), int(seq), name, int(grid), int(block)))
    recs.sort()
    starts = [i for i, r in enumerate(recs) if r[2] == "k_step_prep"]
    if len(starts) < 2:
        sys.exit("fewer than two decode steps in the trace")
    a = starts[step]
    b = starts[step + 1] if step + 1 < len(starts) and step != -1 else len(recs)
    seg = recs[a:b]
    t0 = seg[0][0]
    sums = collections.OrderedDict()
    for i, r in enumerate(seg):
        nxt = seg[i + 1][0] if i + 1 < len(seg) else r[0]
        d = (nxt - r[0]) / 1000.0
        if listing:
            print("%9.2f +%7.2f %-28s grid %6d block %4d" % ((r[0] - t0) / 1000.0, d, r[2], r[3], r[4]))
        s = sums.setdefault(r[2], [0, 0.0])
        s[0] += 1
        s[1] += d
    print("step %d: %d kernels, %.1f us from the first start to the next step" %
          (step, len(seg), ((recs[b][0] if b < len(recs) else seg[-1][0]) - t0) / 1000.0))
    for n, (cnt, us) in sorted(sums.items(), key=lambda x: -x[1][1]):
        print("%-28s %4d %9.1f us" % (n, cnt, us))


if __name__ == "__main__":
    main()
