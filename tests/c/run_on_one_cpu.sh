#!/usr/bin/env bash
# Runs a command pinned to one CPU: the first one of the caller's affinity mask.
#   run_on_one_cpu.sh <command> [args...]
#
# The tsan preset runs every test executable through this (CMAKE_CROSSCOMPILING_EMULATOR).
# Why: Debian's libtbb is not built with -fsanitize=thread, so ThreadSanitizer cannot see
# oneTBB's own synchronization (task spawn, stealing, join and task-object reuse happen
# in libtbb's uninstrumented atomics and futexes). Every access normkit's kernels make
# inside a parallel_for then looks unordered with the code before and after it, and
# TSan reports those as races in normkit's own frames (batch_norm.cpp, the tests'
# buffers), often with the other stack "failed to restore". No suppression can tell
# those apart from real normkit races: `called_from_lib:libtbb.so.12` leaves all of
# them (it only affects interceptors called from libtbb), `race:libtbb.so.12` still
# misses the ones whose stack cannot be restored and makes TSan's report bookkeeping so
# slow that one test case ran for more than 10 minutes.
#
# With a single CPU in its affinity mask, oneTBB starts no worker threads and normkit
# clamps every thread cap to 1, so no TBB task ever runs on another thread: TSan then
# sees every synchronization there is and reports with no suppression at all. What it
# checks is everything normkit synchronizes itself: contexts shared between std::threads,
# cap setters racing with calls, the thread-local error state, one-time ISA detection.
# The threads still interleave (preemption on one CPU); TSan's happens-before analysis
# does not need them to run in parallel. What it cannot check is a race between two TBB
# tasks of one call; the determinism tests (bitwise equal results for every thread
# count, run after run) cover that in the release and asan runs.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: run_on_one_cpu.sh <command> [args...]" >&2; exit 2; }
# "pid 123's current affinity list: 0-3,6" -> 0
cpus=$(taskset -pc $$)
cpu=${cpus##*: }
cpu=${cpu%%[,-]*}
exec taskset -c "$cpu" "$@"
