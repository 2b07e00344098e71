# A C program (programs/preload-calls.c) exercises each call vmsock-run interposes, edge cases included, and
# prints what it observes; run under vmsock-run (its connections over shared memory, confirmed by the debug lines)
# and without it, the output must be the same (issue 18).
source "$(dirname "$0")/lib.sh"
same_under_preload preload-calls "-D_FORTIFY_SOURCE=2"
count_says "$WORK/debug.txt" 6 "shared memory"
echo "ok: $(grep -c . "$WORK/plain.txt") observations, the same with and without vmsock-run"
