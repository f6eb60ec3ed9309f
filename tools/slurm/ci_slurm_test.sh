#!/usr/bin/env bash
# ci_slurm_test.sh - runs `weft batch` as a real Slurm array job on this
# machine: starts a private munged, slurmctld and slurmd (one node, this
# machine, no cgroups), submits tools/slurm/weft-array.sbatch as a 4-task
# array over an 8-job seed sweep of the tiny SD model, waits, and checks
# that every expected output exists exactly once and is a valid PNG, and
# that each of the 4 shards ran its own jobs.
#
#   bash tools/slurm/ci_slurm_test.sh [path/to/weft [source-dir]]
#
# Installs nothing: CI installs Debian's slurm-wlm (slurmctld, slurmd,
# slurm-client, munge) first.  Exits 77 (meson's "skipped") with a reason
# when Slurm is not installed, this is not root, or the daemons cannot
# start; 0 when the array ran and every check passed; 1 otherwise.
# Registered as the meson test slurm/array (suite 'slurm').
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${2:-$(cd "$here/../.." && pwd)}
weft=${1:-$src/build/cli/weft}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

for cmd in slurmctld slurmd sbatch squeue sinfo scontrol scancel munged; do
  command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
  command -v "$cmd" >/dev/null 2>&1 ||
    skip "$cmd not found (install Debian's slurm-wlm: slurmctld slurmd slurm-client munge)"
done
[ "$(id -u)" -eq 0 ] || skip "the Slurm daemons must start as root"
[ -x "$weft" ] || fail "$weft: not built"
ckpt=$src/tests/fixtures/sd15_tiny/diffusers
[ -d "$ckpt" ] || fail "$ckpt: missing"

# Everything lives under one directory, kept for the logs when a check
# fails and removed otherwise.  It must not be group/world writable
# (munged checks).
T=$(mktemp -d /tmp/weft-slurm.XXXXXX)
chmod 700 "$T"
pids=()
cleanup() {
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${jobid:-}" ]; then
    scancel "$jobid" >/dev/null 2>&1
  fi
  # only the daemons this script started, by their ids
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  if [ "${keep:-0}" = 1 ]; then echo "logs kept in $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
keep=1

show_logs() {
  for f in "$T"/munged.log "$T"/slurmctld.log "$T"/slurmd.log; do
    [ -f "$f" ] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; }
  done
}

# ---- munge: a private key and socket, so no system munged is needed --------
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$T/munge.key"
munged --foreground --force --key-file="$T/munge.key" \
  --socket="$T/munge.socket" --pid-file="$T/munged.pid" \
  --log-file="$T/munged.log" --seed-file="$T/munged.seed" \
  >"$T/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$T/munge.socket" ] && break; sleep 0.1; done
[ -S "$T/munge.socket" ] || { show_logs; cat "$T/munged.out"; skip "munged did not start"; }

# ---- slurm.conf: one node (this machine), no cgroups, no accounting ---------
node=$(hostname -s)
cpus=$(nproc)
port=$((20000 + RANDOM % 20000))
cat >"$T/slurm.conf" <<EOF
ClusterName=weftci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge.socket
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p "$T/state" "$T/spool" "$T/out"
export SLURM_CONF=$T/slurm.conf

slurmctld -D -i -f "$T/slurm.conf" >"$T/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$T/slurm.conf" -N "$node" >"$T/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 120); do
  state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { show_logs; cat "$T"/*.out; skip "a Slurm daemon exited at start"; }
  done
  sleep 0.5
done
case "$state" in
  idle*|mixed*|allocated*) ;;
  *) show_logs; skip "the node did not come up (state '$state')" ;;
esac
echo "slurm is up: node $node, $cpus CPUs, port $port"

# ---- the array job: 4 tasks over 8 jobs -----------------------------------
cd "$T"
jobid=$(sbatch --parsable --array=0-3 --cpus-per-task=1 \
  --output="$T/task-%a.log" --export=ALL,WEFT="$weft",WEFT_THREADS=1 \
  "$src/tools/slurm/weft-array.sbatch" "$src/graphs/txt2img.yaml" \
  --set ckpt="$ckpt" --set width=64 --set height=64 --set steps=2 \
  --sweep seed=1..8 --output 'seed-{seed:02}.png' --output-dir "$T/out")
[ -n "$jobid" ] || { show_logs; fail "sbatch did not submit"; }
jobid=${jobid%%;*}
echo "submitted array job $jobid"
done_=0
for _ in $(seq 600); do
  if [ -z "$(squeue -h -j "$jobid" 2>/dev/null)" ]; then done_=1; break; fi
  sleep 0.5
done
[ "$done_" = 1 ] || { show_logs; fail "the array did not finish in 300 s"; }

# ---- checks ----------------------------------------------------------------
status=0
for t in 0 1 2 3; do
  log="$T/task-$t.log"
  echo "--- task $t"
  cat "$log" 2>/dev/null || { echo "FAIL: no log for task $t"; status=1; }
  grep -q "^weft: shard $t/4 (SLURM_ARRAY_TASK_ID=$t, min 0, step 1, count 4): 2 of 8 jobs" "$log" ||
    { echo "FAIL: task $t did not run shard $t/4"; status=1; }
  grep -q "^done 2, skipped 0, failed 0 (of 2)$" "$log" ||
    { echo "FAIL: task $t did not finish its 2 jobs"; status=1; }
done
want=""
for s in 1 2 3 4 5 6 7 8; do want="$want seed-0$s.png"; done
got=$(cd "$T/out" && ls -A | grep -v '^\.weft-ledger\.jsonl$' | sort | tr '\n' ' ')
[ " ${got% }" = "$want" ] ||
  { echo "FAIL: outputs: got '${got% }', want '${want# }'"; status=1; }
for s in 1 2 3 4 5 6 7 8; do
  f="$T/out/seed-0$s.png"
  # a PNG: read back through weft's own PNG reader (LoadImage)
  "$weft" run "$src/tests/batch/load.yaml" --set image="$f" \
    --output-dir "$T/check" -q >/dev/null ||
    { echo "FAIL: $f is not a readable PNG"; status=1; }
done
lines=$(grep -c '"status":"ok"' "$T/out/.weft-ledger.jsonl" 2>/dev/null)
[ "$lines" = 8 ] || { echo "FAIL: ledger has $lines ok lines, want 8"; status=1; }
for t in 0 1 2 3; do
  n=$(grep -c "\"shard\":\"$t/4\"" "$T/out/.weft-ledger.jsonl")
  [ "$n" = 2 ] || { echo "FAIL: shard $t/4 wrote $n ledger lines, want 2"; status=1; }
done
sacct_state=$(scontrol show job "$jobid" 2>/dev/null | grep -o 'JobState=[A-Z]*' | sort -u | tr '\n' ' ')
echo "array $jobid: ${sacct_state:-gone}"
if [ "$status" = 0 ]; then
  keep=0
  echo "PASS: 4 array tasks wrote 8 outputs, each once, all valid PNGs"
else
  show_logs
fi
exit "$status"
