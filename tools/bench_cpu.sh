#!/bin/sh
# bench_cpu.sh - the CPU speed measurements of issue 3 in one run (a many-core
# host; the device machine's Xeon): build, streaming-read bandwidth, FMA peak +
# dense-projection GEMM, then decode/prefill sweeps with the phase profile
# (V4F_PROFILE=1 prints wall time per forward phase and parallel regions per
# eval to stderr). Usage: tools/bench_cpu.sh [BUILD_DIR] [full43]
set -u
B=${1:-build/bench}
T=$(nproc)
make -j"$T" B="$B" NO_PCRE2=1 NO_LIBEDIT=1 WERROR=0 "$B/v4flash" >/tmp/bench_cpu_build.log 2>&1 ||
    { tail -30 /tmp/bench_cpu_build.log; exit 1; }
V=$B/v4flash
grep -m1 "model name" /proc/cpuinfo; echo "cpus: $T"
grep -o -m1 'avx512f' /proc/cpuinfo || echo "no avx512f"
$V bench --membw --threads "$T"
$V bench --gemm --threads "$T"
for p in full-q2:4 full-q4:4; do
    V4F_PROFILE=1 $V bench --synthetic $p --ctx-start 512 --ctx-max 2048 --step-mul 2 --gen 16 \
        --threads "$T" --no-membw 2>&1 | grep -v "^profile prefill:  "
done
if [ "${2:-}" = full43 ]; then
    V4F_PROFILE=1 $V bench --synthetic full-q2 --ctx-start 128 --ctx-max 128 --gen 16 \
        --threads "$T" --no-membw 2>&1 | grep -v "^profile prefill:  "
fi
