#!/usr/bin/env bash
# real-flink.sh — end-to-end tests against a real standalone Flink cluster.
#
#   tests/e2e/real-flink.sh              # run all scenarios
#   tests/e2e/real-flink.sh smoke        # run selected scenarios
#   FLINK_VERSION=1.20.5 tests/e2e/real-flink.sh
#
# One shared cluster is started for all scenarios; each scenario is a function
# scenario_<name> run in its own subshell with `set -e`.  After each scenario
# the runner cancels leftover jobs and stops pids the scenario registered with
# flink_track_pid.  See README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=flink-cluster.sh
source "$HERE/flink-cluster.sh"

# ------------------------------------------------------------------ scenarios
# Add a scenario: write scenario_<name>() below and append <name> here.
SCENARIOS=(smoke)

# Shared state prepared by setup(): CLICKS_JAR_ID (uploaded fixture job).
CLICKS_JAR_ID=""

# check DESCRIPTION COMMAND...: run COMMAND, print ok/not ok, fail the scenario if it fails
check() {
  local what=$1
  shift
  if "$@"; then
    echo "  ok - $what" >&2
  else
    echo "  not ok - $what" >&2
    return 1
  fi
}

# timing LABEL START: record and print how long a step took
TIMINGS_FILE=""
timing() {
  local t
  t=$(flink_elapsed "$2")
  echo "  time: $1 = ${t}s" >&2
  [[ -n "$TIMINGS_FILE" ]] && printf '%-40s %6ss\n' "$1" "$t" >>"$TIMINGS_FILE"
  return 0
}

# smoke: fail a job with retained checkpoints, restore a new job from them.
scenario_smoke() {
  local marker="$FLINK_WORK/smoke.marker" t jid jid2 cp cp_dir restored state
  rm -f "$marker"

  t=$(flink_now)
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- --name smoke-clicks --marker "$marker")
  flink_log "submitted job $jid"
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  timing "smoke: submit -> RUNNING" "$t"

  t=$(flink_now)
  flink_wait_checkpoint "$jid" 1 60 >/dev/null
  timing "smoke: RUNNING -> first checkpoint" "$t"
  check "job is listed by name" test "$(flink_jobs_by_name smoke-clicks RUNNING | head -n1)" = "$jid"

  t=$(flink_now)
  touch "$marker"
  state=$(flink_wait_state "$jid" FAILED 60)
  timing "smoke: marker -> FAILED" "$t"
  check "job failed after the marker appeared (state $state)" test "$state" = FAILED
  check "failure cause names the marker" \
    bash -c '[[ "$1" == *"marker file present"* ]]' _ "$(flink_rest GET "/jobs/$jid/exceptions")"

  cp=$(flink_latest_checkpoint_path "$jid")
  flink_log "failed job's latest completed checkpoint: ${cp:-<none>}"
  check "failed job still names a completed checkpoint" test -n "$cp"
  cp_dir=$(flink_local_path "$cp")
  check "checkpoint directory exists on disk: $cp_dir" test -d "$cp_dir"
  check "checkpoint has _metadata" test -f "$cp_dir/_metadata"

  rm -f "$marker"
  t=$(flink_now)
  jid2=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart --savepoint "$cp" -- --name smoke-clicks --marker "$marker")
  flink_log "resubmitted as job $jid2 from $cp"
  flink_wait_state "$jid2" RUNNING 60 >/dev/null
  restored=$(flink_wait_restored "$jid2" 30)
  timing "smoke: restore submit -> RUNNING+restored" "$t"
  flink_log "restored from (REST): $restored"
  flink_log "restore path used   : $cp"
  check "restored path equals the checkpoint used" \
    test "$(flink_local_path "$restored")" = "$(flink_local_path "$cp")"

  t=$(flink_now)
  flink_wait_checkpoint "$jid2" 1 60 >/dev/null
  check "restored job completes checkpoints" true
  flink_cancel "$jid2" 30
  check "restored job cancels (state $(flink_job_state "$jid2"))" test "$(flink_job_state "$jid2")" = CANCELED
}

# ------------------------------------------------------------------ runner

setup() {
  local t
  t=$(flink_now)
  flink_dist_ensure
  timing "setup: Flink $FLINK_VERSION distribution" "$t"

  t=$(flink_now)
  flink_cluster_start 60
  timing "setup: cluster start (JM+TM ready)" "$t"

  t=$(flink_now)
  flink_build_job
  timing "setup: compile fixture job" "$t"

  t=$(flink_now)
  CLICKS_JAR_ID=$(flink_upload_jar "$FLINK_JOB_JAR")
  timing "setup: upload jar" "$t"
}

run_scenario() {
  local name=$1 t rc mark
  mark=$(flink_tracked_count)
  echo "=== scenario: $name (Flink $FLINK_VERSION)" >&2
  t=$(flink_now)
  # In the background + wait, so a TERM/INT to the runner is handled at once
  # (the exit trap then stops the scenario subshell too).
  set +e
  (
    set -euo pipefail
    "scenario_$name"
  ) </dev/null &
  local spid=$!
  flink_track_pid "$spid" "scenario-$name"
  wait "$spid"
  rc=$?
  set -e
  timing "scenario $name total" "$t"
  flink_stop_tracked_since "$mark" || true
  flink_cancel_all || true
  if ((rc == 0)); then
    echo "=== PASS: $name" >&2
  else
    echo "=== FAIL: $name (exit $rc)" >&2
    flink_mark_failed
  fi
  return "$rc"
}

main() {
  local -a selected=("$@") failed_names=()
  local s passed=0 failed=0 t0
  ((${#selected[@]})) || selected=("${SCENARIOS[@]}")
  for s in "${selected[@]}"; do
    declare -F "scenario_$s" >/dev/null || { echo "unknown scenario: $s (have: ${SCENARIOS[*]})" >&2; exit 2; }
  done

  t0=$(flink_now)
  flink_init
  TIMINGS_FILE="$FLINK_WORK/timings"
  setup

  for s in "${selected[@]}"; do
    if run_scenario "$s"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$s"); fi
  done

  timing "total" "$t0"
  echo "--- timings (Flink $FLINK_VERSION) ---" >&2
  cat "$TIMINGS_FILE" >&2
  ((failed == 0)) || echo "failed scenarios: ${failed_names[*]}" >&2
  echo "real-flink: $passed passed, $failed failed"
  ((failed == 0))
}

main "$@"
