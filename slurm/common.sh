# Sourced by the job scripts in slurm/ (from the repository root): the Python environment, the preemption
# warning forwarded to the trainer, and requeueing. Not a job script itself.
#
# Preemption: Slurm sends the warning (--signal=B:USR1@120) to the batch script only; forward_warning passes it
# to every process of the job's steps with `scancel --signal`. The launchers are started ignoring USR1 (so
# torchrun does not die on it), the trainer ranks catch it (alignrl.preemption): they finish the step, save a
# checkpoint and exit 75; `accelerate launch` then exits 1. A SIGTERM (scancel, preemption, the time limit)
# reaches every process from Slurm itself.
# Requeue: after a preemption, a status of 75, or (REQUEUE_ON_FAILURE=1) any other failure of an attempt that ran
# at least REQUEUE_MIN_SECONDS (`accelerate launch` reports a preempted run as status 1 too; an error at start-up,
# such as a bad recipe, would only fail again), the job requeues itself, at most MAX_REQUEUES times; the rerun
# continues with `--resume auto`.

ALIGNRL_PREEMPTED=0
ALIGNRL_STARTED=$SECONDS

activate_env() {  # activate_env VENV: source VENV/bin/activate when it exists (else use the job's PATH)
  if [ -n "$1" ] && [ -f "$1/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$1/bin/activate"
  fi
}

forward_warning() {  # forward_warning SIGNAL: to every process of the job's steps (not this batch script)
  ALIGNRL_PREEMPTED=1
  echo "alignrl-slurm: $(date +%T) $1 received: the trainer finishes its step, saves and stops" >&2
  scancel --signal="$1" "$SLURM_JOB_ID"
}

trap 'forward_warning USR1' USR1
trap 'ALIGNRL_PREEMPTED=1' TERM

run_and_wait() {  # run_and_wait COMMAND...: run in the background so traps fire at once; returns its status
  "$@" &
  local pid=$! status
  while true; do
    wait "$pid"
    status=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: wait was interrupted by a trapped signal
  done
  return "$status"
}

finish() {  # finish STATUS: exit on success; requeue after a preemption or (optionally) a failure
  local status=$1 restarts=${SLURM_RESTART_COUNT:-0}
  if [ "$status" -eq 0 ]; then
    echo "alignrl-slurm: training finished" >&2
    exit 0
  fi
  local why=""
  if [ "$ALIGNRL_PREEMPTED" = 1 ] || [ "$status" -eq 75 ]; then
    why="preempted"
  elif [ "${REQUEUE_ON_FAILURE:-1}" = 1 ] && [ $((SECONDS - ALIGNRL_STARTED)) -ge "${REQUEUE_MIN_SECONDS:-300}" ]; then
    why="failed with status $status"
  fi
  if [ -n "$why" ] && [ "$restarts" -lt "${MAX_REQUEUES:-3}" ]; then
    echo "alignrl-slurm: $(date +%T) $why; requeueing job $SLURM_JOB_ID" \
         "(restart $((restarts + 1)) of ${MAX_REQUEUES:-3})" >&2
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  echo "alignrl-slurm: training stopped with status $status (restarts: $restarts); not requeued" >&2
  exit "$status"
}
