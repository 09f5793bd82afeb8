#!/usr/bin/env bash
# real-flink.sh — end-to-end tests of Warden against a real standalone Flink cluster.
#
#   tests/e2e/real-flink.sh                        # every scenario
#   tests/e2e/real-flink.sh smoke fail_restart     # the ones named
#   FLINK_VERSION=1.20.5 tests/e2e/real-flink.sh
#   E2E_TIMING_RUNS=5 tests/e2e/real-flink.sh timing
#
# One shared cluster is started for all scenarios; each scenario is a function
# scenario_<name> run in its own subshell with `set -e`, in its own directory
# $SCENARIO_DIR.  After each scenario the runner stops the pids it registered
# with flink_track_pid and cancels leftover jobs.  Warden is taken from
# $WARDEN_BIN, else built (`cargo build --release --bin warden`).  See README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=flink-cluster.sh
source "$HERE/flink-cluster.sh"
# shellcheck source=warden-lib.sh
source "$HERE/warden-lib.sh"

# ------------------------------------------------------------------ scenarios
# Add a scenario: write scenario_<name>() below and append <name> here.
SCENARIOS=(smoke fail_restart savepoint_restart restart_loop kill_resume savepoint_timeout
  cause_while_watched late_savepoint checkpoint_stall jm_failover duplicate_jobs upgrade_ok upgrade_rollback
  rescale_in_place rescale_savepoint)
# `timing` repeats fail_restart E2E_TIMING_RUNS times and prints medians (off by default).
E2E_TIMING_RUNS="${E2E_TIMING_RUNS:-0}"
((E2E_TIMING_RUNS > 0)) && SCENARIOS+=(timing)

# Shared state prepared by setup(): CLICKS_JAR_ID (uploaded fixture job).
CLICKS_JAR_ID=""
# Set by run_scenario for each scenario: its own directory, and its result.
SCENARIO_DIR=""
SCENARIO_RC=0

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

# expect DESCRIPTION COMMAND...: like check, but a failure does not stop the
# scenario: it is reported as failed at its end (for Warden misbehaviour, so
# the scenario's other checks still run)
expect() {
  local what=$1
  shift
  if "$@"; then
    echo "  ok - $what" >&2
  else
    echo "  not ok - $what (WARDEN)" >&2
    echo "$what" >>"$SCENARIO_DIR/.expect-failed"
  fi
  return 0
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

# same_path A B: equal modulo file:, file:// and /_metadata
same_path() { [[ -n "$1" && "$(flink_local_path "$1")" == "$(flink_local_path "$2")" ]]; }
# contains HAYSTACK NEEDLE
contains() { [[ "$1" == *"$2"* ]]; }
# count_words WORDS...: number of arguments (for "exactly one job" checks)
count_words() { echo "$#"; }

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

# The fixture job's program arguments as Warden resubmits them (also used for
# the first submission, so both runs are the same job).
clicks_args() { printf '%s\n' --name clicks --marker "$1" "${@:2}"; }
# warden_args ARGS...: the same as --arg options of warden_write_config
warden_args() { local a; for a in "$@"; do printf '%s\n' --arg "$a"; done; }

# ---------------------------------------------------------------- (a) fail_restart
# A job fails for good (restart-strategy none).  Warden's job-not-running rule,
# in restart_job mode, restarts it from the failed run's last retained
# checkpoint: one new live job, restored from that checkpoint, restart outcome
# ok, an alert with the root cause and a `restarted` record.
scenario_fail_restart() {
  fail_restart_once "$SCENARIO_DIR"
  print_figures "$SCENARIO_DIR/figures.json"
}

# fail_restart_once DIR: the body of (a); writes DIR/figures.json
fail_restart_once() {
  local dir=$1 marker="$1/marker" jid cp rec new live alert wpid n t
  local -a args wargs
  mkdir -p "$dir"
  rm -f "$marker"
  mapfile -t args < <(clicks_args "$marker")
  mapfile -t wargs < <(warden_args "${args[@]}")

  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_log "submitted clicks as $jid"
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 2 60 >/dev/null

  warden_write_config "$dir" --param 'relaunch_mode: restart_job' --param 'restart_strategy: last-checkpoint' \
    "${wargs[@]}" --flink-conf restart-strategy.type=none
  wpid=$(warden_start "$dir")
  flink_log "warden run: pid $wpid"
  sleep 1.5 # let Warden see the job RUNNING first

  t=$(flink_now)
  touch "$marker"
  # not flink_wait_state: see flink_wait_overview_state and cause_while_watched
  flink_wait_overview_state "$jid" FAILED 60 >/dev/null
  rm -f "$marker" # the new job must be able to run
  cp=$(flink_latest_checkpoint_path "$jid")
  flink_log "clicks $jid FAILED; its latest completed checkpoint: $cp"
  check "failed job names a retained checkpoint" test -n "$cp"

  rec=$(warden_wait_restart "$dir" 120)
  timing "fail_restart: marker -> restart done" "$t"
  flink_log "restart record: $rec"
  check "restart outcome is ok" test "$(jsonl 'rows[0]["outcome"]' <<<"$rec")" = ok
  check "restart replaced the failed run" test "$(jsonl 'rows[0]["old_jid"]' <<<"$rec")" = "$jid"
  check "restart strategy is last-checkpoint" test "$(jsonl 'rows[0]["strategy"]' <<<"$rec")" = last-checkpoint
  check "restart location is the failed run's latest checkpoint" same_path "$(jsonl 'rows[0]["location"]' <<<"$rec")" "$cp"

  new=$(jsonl 'rows[0]["new_jid"]' <<<"$rec")
  live=$(live_jobs clicks | xargs)
  check "exactly one live job named clicks ($live)" test "$(count_words $live)" = 1
  check "it is the restart's new job $new" test "$live" = "$new"
  check "it is not the failed run" test "$new" != "$jid"
  flink_wait_state "$new" RUNNING 30 >/dev/null
  check "new job restored from the failed run's latest checkpoint" \
    same_path "$(flink_restored_checkpoint_path "$new")" "$cp"

  alert=$(warden_wait_alert "$dir" 'r["rule"] == "flink/job-not-running" and r["event"] == "firing"' 10)
  check "failure alert carries the root cause" contains "$alert" "marker file present"
  check "failure alert names the failed run" contains "$alert" "$jid"
  alert=$(warden_wait_alert "$dir" 'r["event"] == "restarted"' 10)
  check "a restarted record names the new job" contains "$alert" "$new"
  n=$(warden_history "$dir" | jsonl 'len([e for e in rows if e["action"] in ("run", "restart")])')
  check "one restart in the journal, no command runs ($n)" test "$n" = 1

  # a few more polls: no second restart, still one live job
  sleep 3
  live=$(live_jobs clicks | xargs)
  check "still exactly one live clicks job after 3 s ($live)" test "$live" = "$new"
  n=$(warden_history "$dir" --restarts | jsonl 'len(rows)')
  check "still one restart record ($n)" test "$n" = 1

  collect_figures "$dir" "$jid" "$new" >"$dir/figures.json"
  flink_stop_pid "$wpid" 10
}

# collect_figures DIR OLD_JID NEW_JID: one JSON object of timings (seconds)
# from Flink's and Warden's own timestamps (same host clock).
collect_figures() {
  local dir=$1 old=$2 new=$3
  flink_rest GET "/jobs/$old" >"$dir/old-job.json"
  flink_rest GET "/jobs/$new" >"$dir/new-job.json"
  flink_rest GET "/jobs/$new/checkpoints" >"$dir/new-checkpoints.json"
  warden_history "$dir" >"$dir/journal.jsonl"
  warden_history "$dir" --restarts >"$dir/restarts.jsonl"
  python3 - "$dir" "$new" <<'PY'
import datetime, json, re, sys
d, new = sys.argv[1], sys.argv[2]
def ms(s):
    s = s.strip().replace("Z", "+00:00")
    s = re.sub(r"(\.\d{1,6})\d*", r"\1", s)
    return datetime.datetime.fromisoformat(s).timestamp() * 1000
def rows(f):
    return [json.loads(l) for l in open(f) if l.strip()]
old = json.load(open(d + "/old-job.json"))
nj = json.load(open(d + "/new-job.json"))
cps = json.load(open(d + "/new-checkpoints.json"))
fail = old["timestamps"].get("FAILED") or old["end-time"]
journal = ms(next(e for e in rows(d + "/journal.jsonl") if e["action"] == "restart")["time"])
done = ms(rows(d + "/restarts.jsonl")[-1]["updated"])
submitted = None
for line in open(d + "/warden.log", errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "submitted as " + new in line:
        submitted = ms(line.split()[0])
start, running = nj["start-time"], nj["timestamps"]["RUNNING"]
restored = cps["latest"]["restored"]["restore_timestamp"]
f = lambda a, b: round((b - a) / 1000.0, 2)
print(json.dumps({
    "detect": f(fail, journal),                 # FAILED -> Warden journals the restart (poll + `for`)
    "warden_submit": f(journal, submitted) if submitted else None,  # -> jar run returned (choose state, checks, POST)
    "flink_start": f(journal, start),           # -> Flink has the new job (start-time)
    "start_running": f(start, running),         # Flink: start-time -> RUNNING
    "start_restored": f(start, restored),       # Flink: start-time -> state restored
    "total": f(fail, max(running, restored)),   # FAILED -> new job RUNNING and restored
    "verified": f(fail, done),                  # FAILED -> Warden's restart record says ok
}))
PY
}

# print_figures FILE...: one figures line per file, medians when more than one
print_figures() {
  python3 - "$@" <<'PY' >&2
import json, statistics, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
keys = ["detect", "warden_submit", "flink_start", "start_running", "start_restored", "total", "verified"]
what = {
    "detect": "FAILED -> Warden journals the restart (detection)",
    "warden_submit": "restart journalled -> jar run submitted (Warden + jar run)",
    "flink_start": "restart journalled -> new job's start-time",
    "start_running": "Flink: new job start-time -> RUNNING",
    "start_restored": "Flink: new job start-time -> state restored",
    "total": "FAILED -> new job RUNNING and restored",
    "verified": "FAILED -> Warden's restart verified (outcome ok)",
}
print("  figures (%d run%s%s):" % (len(runs), "" if len(runs) == 1 else "s", ", median [min..max]" if len(runs) > 1 else ""))
for k in keys:
    v = [r[k] for r in runs if r.get(k) is not None]
    if not v:
        continue
    if len(v) == 1:
        print("    %-58s %6.2fs" % (what[k], v[0]))
    else:
        print("    %-58s %6.2fs  [%.2f..%.2f]" % (what[k], statistics.median(v), min(v), max(v)))
PY
}

# ---------------------------------------------------------------- timing
# (a) E2E_TIMING_RUNS times (fresh Warden state each time); medians.
scenario_timing() {
  local i files=()
  for ((i = 1; i <= E2E_TIMING_RUNS; i++)); do
    flink_log "timing run $i/$E2E_TIMING_RUNS"
    fail_restart_once "$SCENARIO_DIR/run-$i" # not in a condition: `set -e` must stay in force
    files+=("$SCENARIO_DIR/run-$i/figures.json")
    print_figures "$SCENARIO_DIR/run-$i/figures.json"
    flink_cancel_all
  done
  print_figures "${files[@]}"
}

# ---------------------------------------------------------------- (b) savepoint_restart
# `warden restart --strategy savepoint` on a running job: exit 0, the old run
# FINISHED (stop-with-savepoint), the new one restored from the savepoint that
# `warden history --savepoints` records.
scenario_savepoint_restart() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" jid rc=0 sp rec new live t
  local -a args wargs
  mapfile -t args < <(clicks_args "$marker")
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 1 60 >/dev/null
  warden_write_config "$dir" "${wargs[@]}" --flink-conf restart-strategy.type=none --job 'savepoint_mode: stop'

  t=$(flink_now)
  warden_cli "$dir" restart --target "$WARDEN_TARGET" --job clicks --strategy savepoint \
    >"$dir/restart.out" 2>"$dir/warden-restart.log" || rc=$?
  timing "savepoint_restart: warden restart" "$t"
  sed 's/^/    | /' "$dir/restart.out" >&2
  check "warden restart exits 0 (got $rc)" test "$rc" = 0
  # GET /jobs/:jid comes from Flink's execution-graph cache (500 ms here): a restart that ends within that window
  # may still read RUNNING there while /jobs/overview, which Warden asks, already says FINISHED.
  local st="" i
  for ((i = 0; i < 20; i++)); do st=$(flink_job_state "$jid"); [[ "$st" == FINISHED ]] && break; sleep 0.1; done
  check "old run $jid is FINISHED (got $st)" test "$st" = FINISHED

  sp=$(warden_history "$dir" --savepoints | jsonl "next((s['location'] for s in rows if s['kind'] == 'savepoint' and s['jid'] == '$jid'), None)")
  flink_log "savepoint recorded by Warden: ${sp:-<none>}"
  check "warden history --savepoints has the savepoint of $jid" test -n "$sp"
  check "the savepoint is under jobs.clicks.savepoint_dir" contains "$sp" "$dir/savepoints/"
  check "the savepoint exists on disk" test -f "$(flink_local_path "$sp")/_metadata"

  rec=$(warden_history "$dir" --restarts | jsonl 'rows[-1]')
  check "restart outcome is ok" test "$(jsonl 'rows[0]["outcome"]' <<<"$rec")" = ok
  check "restart location is that savepoint" same_path "$(jsonl 'rows[0]["location"]' <<<"$rec")" "$sp"
  new=$(jsonl 'rows[0]["new_jid"]' <<<"$rec")
  live=$(live_jobs clicks | xargs)
  check "exactly one live clicks job, the new one ($live)" test "$live" = "$new"
  check "new job is RUNNING" test "$(flink_job_state "$new")" = RUNNING
  check "new job restored from the savepoint" same_path "$(flink_restored_checkpoint_path "$new")" "$sp"
  check "alerts.jsonl has a restarted record" \
    test -n "$(jsonl 'next((r for r in rows if r["event"] == "restarted"), None)' <"$dir/state/alerts.jsonl")"
}

# ---------------------------------------------------------------- (c) restart_loop
# Flink restarts a failing job by itself (exponential delay): Warden alerts
# flink/restart-loop with the root cause and neither relaunches nor restarts it.
scenario_restart_loop() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" jid alert n live wpid t
  local -a args wargs
  mapfile -t args < <(clicks_args "$marker")
  mapfile -t wargs < <(warden_args "${args[@]}")
  touch "$marker"
  jid=$(flink_run_jar "$CLICKS_JAR_ID" -- "${args[@]}") # the cluster's default restart strategy
  flink_log "submitted clicks as $jid (marker present, Flink restarts it)"
  warden_write_config "$dir" "${wargs[@]}" --param 'relaunch_mode: restart_job' \
    --param 'restarting_for: 5s' --param 'max_restarts: 3' --param 'restarts_window: 2m'
  t=$(flink_now)
  wpid=$(warden_start "$dir")
  alert=$(warden_wait_alert "$dir" 'r["rule"] == "flink/restart-loop" and r["event"] == "firing"' 90)
  timing "restart_loop: warden start -> alert" "$t"
  flink_log "alert: $alert"
  check "restart-loop alert carries the root cause" contains "$alert" "marker file present"
  check "restart-loop alert names the job" test "$(jsonl 'rows[0]["subject"]' <<<"$alert")" = clicks
  sleep 3 # a few more polls
  n=$(warden_history "$dir" | jsonl 'len([e for e in rows if e["action"] in ("run", "restart")])')
  check "no run/restart entries in the journal ($n)" test "$n" = 0
  n=$(warden_history "$dir" --restarts | jsonl 'len(rows)')
  check "no restart records ($n)" test "$n" = 0
  live=$(live_jobs clicks | xargs)
  check "the only live clicks job is Flink's own ($live)" test "$live" = "$jid"
  check "Flink is still restarting it ($(flink_job_state "$jid"))" \
    bash -c '[[ " RESTARTING RUNNING INITIALIZING CREATED " == *" $1 "* ]]' _ "$(flink_job_state "$jid")"
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- (d) kill_resume
# `warden restart --strategy savepoint` of a back-pressured job (the savepoint
# stays IN_PROGRESS while $SCENARIO_DIR/slow exists) is killed (-9) once its
# record shows step savepoint-triggered; `warden run` resumes it and waits
# for the same savepoint; the back-pressure clears, the savepoint completes.
# Asserts exactly one new job, from the savepoint the restart record names.
scenario_kill_resume() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" slow="$SCENARIO_DIR/slow" jid rpid rec step trig sp new live wpid t deadline st
  local -a args wargs
  mapfile -t args < <(clicks_args "$marker" --slow 200 --rate 1000 --slow-while "$slow")
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 1 60 >/dev/null
  touch "$slow" # 200 ms per record from now on: back-pressure, barriers stuck
  sleep 3
  warden_write_config "$dir" "${wargs[@]}" --flink-conf restart-strategy.type=none --job 'savepoint_mode: stop' \
    --param 'relaunch_mode: restart_job'

  t=$(flink_now)
  (exec "$WARDEN_BIN" --config "$dir/warden.yaml" restart --target "$WARDEN_TARGET" --job clicks --strategy savepoint) \
    >"$dir/restart.out" 2>"$dir/warden-restart.log" </dev/null &
  rpid=$!
  flink_track_pid "$rpid" warden-restart
  deadline=$((SECONDS + 60))
  step=""
  while ((SECONDS < deadline)); do
    rec=$(warden_history "$dir" --restarts 2>/dev/null | jsonl 'rows[-1] if rows else None' || true)
    [[ -n "$rec" ]] && step=$(jsonl 'rows[0]["step"]' <<<"$rec")
    [[ "$step" == savepoint-triggered ]] && break
    _pid_alive "$rpid" || break
    sleep 0.1
  done
  check "warden restart reached step savepoint-triggered (step: ${step:-none})" test "$step" = savepoint-triggered
  trig=$(jsonl 'rows[0]["trigger_id"]' <<<"$rec")
  st=$(flink_savepoint_status "$jid" "$trig" 2>/dev/null || true)
  check "the savepoint is in progress (${st:-?})" test "$st" = IN_PROGRESS
  check "warden restart is still running (pid $rpid)" _pid_alive "$rpid"
  kill -KILL "$rpid"
  wait "$rpid" 2>/dev/null || true
  timing "kill_resume: restart start -> kill -9" "$t"
  flink_log "killed warden restart (pid $rpid) at step $step; savepoint $trig: $st; job: $(flink_job_state "$jid")"
  rec=$(warden_history "$dir" --restarts | jsonl 'rows[-1]')
  check "the restart record is unfinished" test -z "$(jsonl 'rows[0].get("outcome")' <<<"$rec")"

  t=$(flink_now)
  wpid=$(warden_start "$dir")
  sleep 2
  check "warden run resumed the restart" grep -q "taking over restart #[0-9]* of clicks at step savepoint-triggered" "$dir/warden.log"
  rec=$(warden_history "$dir" --restarts | jsonl 'rows[-1]')
  check "it waits for the same savepoint (step $(jsonl 'rows[0]["step"]' <<<"$rec"))" \
    test "$(jsonl 'rows[0]["step"]' <<<"$rec"),$(jsonl 'rows[0].get("outcome")' <<<"$rec")" = "savepoint-triggered,"
  rm -f "$slow" # back-pressure clears: the savepoint completes and stops the job
  rec=$(warden_wait_restart "$dir" 120)
  timing "kill_resume: warden run -> restart done" "$t"
  flink_log "restart record: $rec"
  check "restart outcome is ok" test "$(jsonl 'rows[0]["outcome"]' <<<"$rec")" = ok
  check "the record still has trigger $trig" test "$(jsonl 'rows[0]["trigger_id"]' <<<"$rec")" = "$trig"
  check "old run $jid is FINISHED" test "$(flink_job_state "$jid")" = FINISHED
  sp=$(jsonl 'rows[0]["location"]' <<<"$rec")
  check "the restart record names a savepoint ($sp)" contains "$sp" "$dir/savepoints/"
  check "warden history --savepoints has it as the savepoint of $jid" test -n \
    "$(warden_history "$dir" --savepoints | jsonl "next((s for s in rows if s['kind'] == 'savepoint' and s['jid'] == '$jid' and norm(s['location']) == norm('$sp')), None)")"
  new=$(jsonl 'rows[0]["new_jid"]' <<<"$rec")
  live=$(live_jobs clicks | xargs)
  check "exactly one live clicks job, the new one ($live)" test "$live" = "$new"
  check "new job restored from the savepoint" same_path "$(flink_restored_checkpoint_path "$new")" "$sp"
  check "alerts.jsonl has the resumed restart's restarted record" test -n \
    "$(jsonl 'next((r for r in rows if r["event"] == "restarted" and r["rule"] == "warden/resume"), None)' <"$dir/state/alerts.jsonl")"
  sleep 3
  live=$(live_jobs clicks | xargs)
  check "still exactly one live clicks job after 3 s ($live)" test "$live" = "$new"
  check "one restart record" test "$(warden_history "$dir" --restarts | jsonl 'len(rows)')" = 1
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- (e) savepoint_timeout
# A backpressured job cannot complete a savepoint: `warden restart` gives up
# after jobs.clicks.savepoint_timeout (10 s), exits non-zero, the job keeps
# RUNNING, and alerts.jsonl has a restart_failed record naming step `savepoint`.
scenario_savepoint_timeout() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" jid rc=0 rec alert live t el
  local -a args wargs
  mapfile -t args < <(clicks_args "$marker" --slow 200 --rate 1000)
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  sleep 3 # let back-pressure build up
  warden_write_config "$dir" "${wargs[@]}" --flink-conf restart-strategy.type=none --job 'savepoint_timeout: 10s'

  t=$(flink_now)
  warden_cli "$dir" restart --target "$WARDEN_TARGET" --job clicks --strategy savepoint \
    >"$dir/restart.out" 2>"$dir/warden-restart.log" || rc=$?
  el=$(flink_elapsed "$t")
  timing "savepoint_timeout: warden restart" "$t"
  sed 's/^/    | /' "$dir/restart.out" >&2
  check "warden restart exits non-zero (got $rc)" test "$rc" != 0
  check "it gave up after the 10 s savepoint_timeout (${el}s)" \
    python3 -c 'import sys; sys.exit(not 9.5 <= float(sys.argv[1]) <= 40)' "$el"
  check "the job is still RUNNING" test "$(flink_job_state "$jid")" = RUNNING
  rec=$(warden_history "$dir" --restarts | jsonl 'rows[-1]')
  check "restart outcome: failed at savepoint" bash -c '[[ "$1" == "failed at savepoint:"* ]]' _ "$(jsonl 'rows[0]["outcome"]' <<<"$rec")"
  alert=$(jsonl 'next((r for r in rows if r["event"] == "restart_failed"), None)' <"$dir/state/alerts.jsonl")
  flink_log "restart_failed record: $alert"
  check "alerts.jsonl has a restart_failed record" test -n "$alert"
  check "it names step savepoint" contains "$alert" 'step `savepoint`'
  live=$(live_jobs clicks | xargs)
  check "the only live clicks job is the original ($live)" test "$live" = "$jid"
  sleep 2
  check "the job is still RUNNING 2 s later" test "$(flink_job_state "$jid")" = RUNNING
}

# ---------------------------------------------------------------- (f) cause_while_watched
# Like the failure of (a), while something else looks at the job the way
# Flink's web UI does (GET /jobs/:jid every 0.5 s).  Flink answers
# /jobs/:jid and /jobs/:jid/exceptions from one execution-graph cache, kept for
# rest.cache.execution-graph.timeout (3 s by default): for up to that long
# after /jobs/overview says FAILED, the exceptions answer is the cached
# pre-failure one, without the failure.  Warden's job-not-running must still
# alert with the root cause.  Runs on a cluster of its own with Flink's
# default cache timeout (the shared one uses 500 ms); four jobs fail one
# after the other (alert only; Warden polls every 200 ms, so its first look
# at each failed job falls into the window nearly always).
scenario_cause_while_watched() {
  local dir=$SCENARIO_DIR i jid alert wpid cause jar t
  local -a jids=() names=(clicks-w1 clicks-w2 clicks-w3 clicks-w4)
  # a second cluster, in this subshell only (globals are copies here)
  t=$(flink_now)
  FLINK_REST_PORT="" FLINK_CONF_DIR="$dir/conf" FLINK_LOG_DIR="$dir/log"
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR"
  flink_cluster_start 90 "rest.cache.execution-graph.timeout: 3000"
  jar=$(flink_upload_jar "$FLINK_JOB_JAR")
  timing "cause_while_watched: own cluster ready" "$t"
  for i in 0 1 2 3; do
    jids+=("$(flink_run_jar "$jar" --no-restart -- --name "${names[$i]}" --marker "$dir/marker-$i")")
  done
  for jid in "${jids[@]}"; do flink_wait_state "$jid" RUNNING 60 >/dev/null; done
  warden_write_config "$dir" --every 200ms --param 'expected_jobs: [clicks-w1, clicks-w2, clicks-w3, clicks-w4]' \
    --param 'relaunch_mode: command' --param 'relaunch_command: ""'
  wpid=$(warden_start "$dir")
  (
    while :; do
      for jid in "${jids[@]}"; do curl -s -o /dev/null --max-time 2 "$FLINK_REST_URL/jobs/$jid" || true; done
      sleep 0.5
    done
  ) </dev/null >/dev/null 2>&1 &
  flink_track_pid $! dashboard-poller
  sleep 1.5
  for i in 0 1 2 3; do
    touch "$dir/marker-$i"
    flink_wait_overview_state "${jids[$i]}" FAILED 60 >/dev/null
    alert=$(warden_wait_alert "$dir" "r['rule'] == 'flink/job-not-running' and r['event'] == 'firing' and r['subject'] == '${names[$i]}'" 20)
    cause=$(jsonl 'rows[0]["details"].get("root_cause")' <<<"$alert")
    flink_log "${names[$i]}: alert root_cause: $cause"
    expect "${names[$i]}: the alert carries the root cause (got: $cause)" contains "$cause" "marker file present"
    sleep 3 # Flink's cache has caught up by now
    check "${names[$i]}: Flink's /jobs/:jid/exceptions has it" \
      contains "$(flink_rest GET "/jobs/${jids[$i]}/exceptions?maxExceptions=5")" "marker file present"
  done
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- (g) late_savepoint
# (e) again, but the back-pressure clears after Warden gave up: the
# stop-with-savepoint Warden triggered is still pending in Flink (there is no
# REST call to abort it), completes, and stops the job.  Warden said "the job
# keeps running"; with `warden run` watching (expected_jobs: [clicks],
# restart_job) a clicks job must be live afterwards.
scenario_late_savepoint() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" slow="$SCENARIO_DIR/slow" jid rc=0 wpid st live deadline
  local -a args wargs
  touch "$slow"
  mapfile -t args < <(clicks_args "$marker" --slow 200 --rate 1000 --slow-while "$slow")
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  sleep 3 # back-pressure
  warden_write_config "$dir" "${wargs[@]}" --flink-conf restart-strategy.type=none --job 'savepoint_timeout: 10s'
  wpid=$(warden_start "$dir")
  warden_cli "$dir" restart --target "$WARDEN_TARGET" --job clicks --strategy savepoint \
    >"$dir/restart.out" 2>"$dir/warden-restart.log" || rc=$?
  sed 's/^/    | /' "$dir/restart.out" >&2
  check "warden restart gave up (exit $rc)" test "$rc" != 0
  check "the job is still RUNNING" test "$(flink_job_state "$jid")" = RUNNING

  rm -f "$slow" # the load spike is over
  flink_log "back-pressure cleared"
  deadline=$((SECONDS + 15))
  while ((SECONDS < deadline)); do
    st=$(flink_job_state "$jid")
    [[ "$st" == RUNNING ]] || break
    sleep 0.5
  done
  flink_log "old run $jid: $st"
  if [[ "$st" != RUNNING ]]; then
    deadline=$((SECONDS + 20)) # time for Warden to bring it back
    while ((SECONDS < deadline)); do
      [[ -n "$(live_jobs clicks)" ]] && break
      sleep 0.5
    done
  fi
  live=$(live_jobs clicks | xargs)
  flink_log "live clicks jobs: ${live:-none}; Warden's alerts since:"
  jsonl '"\n".join("    %s %s: %s" % (r["event"], r["rule"], r["summary"][:150]) for r in rows)' <"$dir/state/alerts.jsonl" >&2 || true
  expect "a clicks job is live after the back-pressure cleared (old run: $st, live: ${live:-none})" test -n "$live"
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- checkpoint_stall
# A job stays RUNNING while its checkpoints stop completing: back-pressure
# (--slow-while) holds the barriers, each checkpoint expires after its 3 s
# timeout, and 1000 tolerable failures keep Flink from failing the job over.
# Warden (checkpoint_stall_max: 10s, so the window is 10 s) alerts
# flink/checkpoints-stalled for that job, with the numbers and Flink's failure
# message, and resolves it once the back-pressure is gone and a checkpoint
# completes. Nothing is relaunched or restarted. A second job without
# checkpointing (`nockpt`) is said once by flink/checkpointing-off; Flink's
# answers for it are kept in the scenario dir.
scenario_checkpoint_stall() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" slow="$SCENARIO_DIR/slow" jid off wpid alert n t before after
  local -a args wargs
  off=$(flink_run_jar "$CLICKS_JAR_ID" -- --name nockpt --checkpoint-interval 0)
  flink_wait_state "$off" RUNNING 60 >/dev/null
  flink_rest GET "/jobs/$off/checkpoints" >"$dir/nockpt-checkpoints.json" || true
  flink_rest GET "/jobs/$off/checkpoints/config" >"$dir/nockpt-checkpoints-config.json" || true
  mapfile -t args < <(clicks_args "$marker" --slow 200 --rate 1000 --slow-while "$slow" \
    --checkpoint-timeout 3000 --tolerable-failed-checkpoints 1000)
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" -- "${args[@]}")
  flink_log "submitted clicks as $jid"
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 2 60 >/dev/null
  warden_write_config "$dir" "${wargs[@]}" --param 'checkpoint_stall_max: 10s'
  wpid=$(warden_start "$dir")
  sleep 12 # longer than the stall window: a healthy job is not reported
  n=$(jsonl 'len([r for r in rows if r["rule"] in ("flink/checkpoints-stalled", "flink/checkpoints-failing", "flink/checkpoint-duration")])' <"$dir/state/alerts.jsonl" 2>/dev/null || echo 0)
  check "no checkpoint alert while checkpoints complete ($n)" test "${n:-0}" = 0
  alert=$(warden_wait_alert "$dir" 'r["rule"] == "flink/checkpointing-off"' 10)
  check "checkpointing-off names the job without checkpoints" test "$(jsonl 'rows[0]["subject"]' <<<"$alert")" = nockpt

  touch "$slow"
  t=$(flink_now)
  flink_log "back-pressure on"
  alert=$(warden_wait_alert "$dir" 'r["rule"] == "flink/checkpoints-stalled" and r["event"] == "firing"' 90)
  timing "checkpoint_stall: back-pressure -> alert" "$t"
  flink_log "alert: $(jsonl 'rows[0]["summary"]' <<<"$alert")"
  check "the alert names the job" test "$(jsonl 'rows[0]["subject"]' <<<"$alert")" = clicks
  check "the alert carries the job id" test "$(jsonl 'rows[0]["details"]["jid"]' <<<"$alert")" = "$jid"
  check "the alert carries Flink's failure message" contains "$(jsonl 'rows[0]["details"]["latest_failure"]' <<<"$alert")" "expired"
  check "the alert carries the window (10 s)" test "$(jsonl 'rows[0]["details"]["window_ms"]' <<<"$alert")" = 10000
  check "the job is still RUNNING" test "$(flink_job_state "$jid")" = RUNNING

  before=$(flink_completed_checkpoints "$jid")
  rm -f "$slow"
  t=$(flink_now)
  flink_log "back-pressure off"
  warden_wait_alert "$dir" 'r["rule"] == "flink/checkpoints-stalled" and r["event"] == "resolved"' 90 >/dev/null
  timing "checkpoint_stall: back-pressure off -> resolved" "$t"
  after=$(flink_completed_checkpoints "$jid")
  check "checkpoints complete again ($before -> $after)" test "$after" -gt "$before"
  n=$(jsonl 'len([r for r in rows if r["rule"] == "flink/checkpoints-stalled" and r["event"] == "firing"])' <"$dir/state/alerts.jsonl")
  check "one stalled alert ($n)" test "$n" = 1
  n=$(jsonl 'len([r for r in rows if r["rule"] == "flink/checkpointing-off"])' <"$dir/state/alerts.jsonl")
  check "checkpointing-off said once ($n)" test "$n" = 1
  n=$(warden_history "$dir" | jsonl 'len([e for e in rows if e["action"] in ("run", "restart")])')
  check "nothing relaunched or restarted ($n)" test "$n" = 0
  check "the job is the same run, RUNNING" test "$(live_jobs clicks | xargs)" = "$jid"
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- (h) jm_failover
# The JobManager process is killed (kill -9) and started again, on a cluster of
# the scenario's own (standalone, no HA: the new JobManager lists no jobs, so
# the script resubmits clicks, as a deploy pipeline would).  Warden runs the
# flink pack and plugins/flink-ha (target label flink-ha: jobmanager).
# "Relaunches nothing it merely could not see" means: while the JobManager is
# down every poll fails and judges nothing (no run, no restart), and a job the
# restarted JobManager does not list is not relaunched either, because
# relaunch_missing is false (with relaunch_missing: true, the default, Warden
# would relaunch it once the JobManager answers without it: that it sees).
# Expected: one flink-ha/jobmanager-failover report naming clicks and its new
# id, no run and no restart in the journal, one live clicks job.
scenario_jm_failover() {
  local dir=$SCENARIO_DIR jar jid new wpid t n rec live
  local -a args
  # a cluster of its own, in this subshell only (globals are copies here)
  FLINK_REST_PORT="" FLINK_CONF_DIR="$dir/conf" FLINK_LOG_DIR="$dir/log"
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR"
  flink_cluster_start 90
  jar=$(flink_upload_jar "$FLINK_JOB_JAR")
  mapfile -t args < <(clicks_args "$dir/marker")
  jid=$(flink_run_jar "$jar" -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  warden_write_config "$dir" --param 'relaunch_missing: false'
  python3 - "$dir/warden.yaml" "$WARDEN_REPO/plugins/flink-ha" <<'PY'
import json, sys
path, pack = sys.argv[1:3]
s = open(path).read()
s = s.replace("pack_paths: [", "pack_paths: [" + json.dumps(pack) + ", ", 1)
s = s.replace("    timeout: 5s\n", "    timeout: 5s\n    labels: {flink-ha: jobmanager}\n", 1)
s = s.replace("packs:\n", "packs:\n  flink-ha:\n    every: 1s\n    params: {report_wait: 180s}\n", 1)
open(path, "w").write(s)
PY
  "$WARDEN_BIN" check --config "$dir/warden.yaml" >"$dir/warden-check.out" 2>&1 ||
    { cat "$dir/warden-check.out" >&2; flink_die "warden check rejects the flink-ha config"; return 1; }
  wpid=$(warden_start "$dir")
  sleep 4 # Warden knows the JobManager's identity and its jobs
  n=0
  [[ -f "$dir/state/alerts.jsonl" ]] &&
    n=$(jsonl 'sum(1 for r in rows if r["rule"] == "flink-ha/jobmanager-failover")' <"$dir/state/alerts.jsonl")
  check "no fail-over reported before the kill ($n)" test "$n" = 0

  t=$(flink_now)
  flink_jobmanager_kill
  sleep 8 # Warden polls a dead JobManager: several times unreachable_polls and not_running_for
  flink_jobmanager_start 90
  timing "jm_failover: kill -> JobManager back, TaskManager registered" "$t"
  check "the restarted JobManager lists no clicks job (no HA)" test -z "$(live_jobs clicks)"
  n=0
  [[ -f "$dir/state/alerts.jsonl" ]] &&
    n=$(jsonl 'sum(1 for r in rows if r["rule"] == "flink-ha/jobmanager-failover")' <"$dir/state/alerts.jsonl")
  expect "no fail-over reported yet: Warden waits report_wait for the jobs ($n)" test "$n" = 0

  jar=$(flink_upload_jar "$FLINK_JOB_JAR") # the new JobManager has no jars either
  new=$(flink_run_jar "$jar" -- "${args[@]}")
  flink_wait_state "$new" RUNNING 60 >/dev/null
  rec=$(warden_wait_alert "$dir" 'r["rule"] == "flink-ha/jobmanager-failover"' 120)
  timing "jm_failover: kill -> fail-over reported" "$t"
  flink_log "fail-over report: $(jsonl 'rows[0]["summary"]' <<<"$rec")"
  expect "the report names clicks and its new run" contains "$(jsonl 'rows[0]["summary"]' <<<"$rec")" \
    "clicks (running again under a new id $new)"
  expect "the report gives the old and the new JobManager identity" test \
    "$(jsonl 'rows[0]["details"]["previous_identity"] != rows[0]["details"]["identity"]' <<<"$rec")" = true
  sleep 5 # more polls of the new JobManager
  n=$(jsonl 'sum(1 for r in rows if r["rule"] == "flink-ha/jobmanager-failover")' <"$dir/state/alerts.jsonl")
  expect "the fail-over is reported exactly once in the alert log (got $n)" test "$n" = 1
  n=$(warden_history "$dir" | jsonl 'sum(1 for r in rows if r["rule"] == "flink-ha/jobmanager-failover")')
  expect "and journalled exactly once (got $n)" test "$n" = 1
  n=$(warden_history "$dir" | jsonl 'len([r for r in rows if r["action"] in ("run", "restart")])')
  expect "Warden ran and restarted nothing (journal entries of run/restart: $n)" test "$n" = 0
  n=$(warden_history "$dir" --restarts | jsonl 'len(rows)')
  expect "no restart records ($n)" test "$n" = 0
  n=$(jsonl 'sum(1 for r in rows if r["rule"] == "flink/jobmanager-unreachable" and r["event"] == "firing")' \
    <"$dir/state/alerts.jsonl")
  expect "jobmanager-unreachable fired once during the outage (got $n)" test "$n" = 1
  live=$(live_jobs clicks | xargs)
  check "exactly one live clicks job, the resubmitted one ($live)" test "$live" = "$new"
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- duplicate_jobs
# Two instances of clicks run at once (a relaunch that raced an operator, a
# retried submit). Warden alerts flink/duplicate-jobs (critical) naming both job
# ids, and relaunches, restarts or cancels nothing: both are still RUNNING; no
# job-not-running alert. An operator cancels one: the alert resolves, and
# nothing is relaunched for the cancelled one (the other is live).
scenario_duplicate_jobs() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" j1 j2 alert wpid n live both t
  local -a args wargs
  mapfile -t args < <(clicks_args "$marker")
  mapfile -t wargs < <(warden_args "${args[@]}")
  j1=$(flink_run_jar "$CLICKS_JAR_ID" -- "${args[@]}")
  j2=$(flink_run_jar "$CLICKS_JAR_ID" -- "${args[@]}")
  flink_wait_state "$j1" RUNNING 60 >/dev/null
  flink_wait_state "$j2" RUNNING 60 >/dev/null
  flink_log "two clicks instances: $j1 $j2"
  warden_write_config "$dir" "${wargs[@]}"
  t=$(flink_now)
  wpid=$(warden_start "$dir")
  alert=$(warden_wait_alert "$dir" 'r["rule"] == "flink/duplicate-jobs" and r["event"] == "firing"' 60)
  timing "duplicate_jobs: warden start -> alert" "$t"
  flink_log "alert: $alert"
  check "the duplicate-jobs alert is critical" test "$(jsonl 'rows[0]["severity"]' <<<"$alert")" = critical
  check "the duplicate-jobs alert is about clicks" test "$(jsonl 'rows[0]["subject"]' <<<"$alert")" = clicks
  check "the summary names the first instance" contains "$(jsonl 'rows[0]["summary"]' <<<"$alert")" "$j1"
  check "the summary names the second instance" contains "$(jsonl 'rows[0]["summary"]' <<<"$alert")" "$j2"
  check "details.jids lists both" test "$(jsonl 'sorted(rows[0]["details"]["jids"])' <<<"$alert")" = \
    "$(python3 -c 'import json,sys; print(json.dumps(sorted(sys.argv[1:])))' "$j1" "$j2")"
  sleep 5 # a few more polls
  n=$(warden_history "$dir" | jsonl 'len([e for e in rows if e["action"] in ("run", "restart")])')
  expect "no run/restart entries in the journal ($n)" test "$n" = 0
  n=$(warden_history "$dir" --restarts | jsonl 'len(rows)')
  expect "no restart records ($n)" test "$n" = 0
  live=$(live_jobs clicks | sort | xargs)
  both=$(printf '%s\n' "$j1" "$j2" | sort | xargs)
  expect "both instances are still live ($live)" test "$live" = "$both"
  n=$(jsonl 'len([r for r in rows if r["rule"] == "flink/duplicate-jobs" and r["event"] == "firing"])' \
    <"$dir/state/alerts.jsonl")
  expect "the duplicate-jobs alert fired once ($n)" test "$n" = 1
  n=$(jsonl 'len([r for r in rows if r["rule"] == "flink/job-not-running"])' <"$dir/state/alerts.jsonl")
  expect "no job-not-running alert ($n)" test "$n" = 0

  flink_cancel "$j2"
  flink_log "cancelled $j2"
  alert=$(warden_wait_alert "$dir" 'r["rule"] == "flink/duplicate-jobs" and r["event"] == "resolved"' 30)
  check "duplicate-jobs resolved after the cancel" test "$(jsonl 'rows[0]["subject"]' <<<"$alert")" = clicks
  sleep 3
  n=$(warden_history "$dir" | jsonl 'len([e for e in rows if e["action"] in ("run", "restart")])')
  expect "still no run/restart entries ($n)" test "$n" = 0
  live=$(live_jobs clicks | xargs)
  expect "the other instance is the one live clicks job ($live)" test "$live" = "$j1"
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- upgrades
# upgrade_start DIR: clicks from clicks.jar (first counts in DIR/counts), a
# checkpoint, warden.yaml (stop-with-savepoint, 10s probation, no Flink
# restarts) and `warden run` watching; prints the job id
upgrade_start() {
  local dir=$1 jid
  local -a args wargs
  mapfile -t args < <(clicks_args "$dir/marker" --count-file "$dir/counts")
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 1 60 >/dev/null
  warden_write_config "$dir" "${wargs[@]}" --flink-conf restart-strategy.type=none --job 'savepoint_mode: stop' \
    --job 'upgrade: {probation: 10s}'
  warden_start "$dir" >/dev/null
  # Let the counter grow, so that a restored run starts well above 1.
  sleep 4
  printf '%s\n' "$jid"
}

# upgrade_counts DIR N: wait until N runs appended their first count; prints the last
upgrade_counts() {
  local dir=$1 n=$2 i
  for ((i = 0; i < 120; i++)); do
    (($(wc -l <"$dir/counts" 2>/dev/null || echo 0) >= n)) && break
    sleep 0.5
  done
  tail -n 1 "$dir/counts" | awk '{print $2}'
}

# upgrade_figures DIR LABEL: each restart record's time, split into Flink's part
# (jar upload, the savepoint's end-to-end duration from Flink's checkpoint
# statistics, the jar run call, the new job's INITIALIZING -> RUNNING from its
# timestamps) and Warden's (the rest: its own work plus the latency of polling
# Flink every second), probation apart; from the step timestamps of
# `warden history --restarts`.
upgrade_figures() {
  local dir=$1 label=$2
  warden_history "$dir" --restarts | python3 -c '
import json, sys, urllib.request
from datetime import datetime
base, label, out = sys.argv[1], sys.argv[2], sys.argv[3]
def get(p):
    try:
        return json.load(urllib.request.urlopen(base + p, timeout=10))
    except Exception:
        return {}
def t(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
def norm(p):
    p = (p or "").replace("file://", "").replace("file:", "")
    return p.rstrip("/").removesuffix("/_metadata")
lines = []
for r in (json.loads(l) for l in sys.stdin if l.strip()):
    steps = r.get("steps") or []
    at = {s["step"]: t(s["at"]) for s in steps}
    total = t(r["updated"]) - t(r["started"])
    probation = at.get("done", t(r["updated"])) - at["probation"] if "probation" in at else 0.0
    upload = at["jar-uploaded"] - at["started"] if "jar-uploaded" in at and "started" in at else 0.0
    run = at["submitted"] - at["submitting"] if "submitted" in at and "submitting" in at else 0.0
    savepoint = 0.0
    if r.get("trigger_id"):
        hist = get("/jobs/%s/checkpoints" % r["old_jid"]).get("history", [])
        sp = [h for h in hist if h.get("is_savepoint") and norm(h.get("external_path")) == norm(r.get("location"))]
        savepoint = sp[0]["end_to_end_duration"] / 1000.0 if sp else 0.0
    start = 0.0
    if r.get("new_jid"):
        ts = get("/jobs/%s" % r["new_jid"]).get("timestamps", {})
        end = ts.get("RUNNING") or ts.get("FAILED") or 0
        if end and ts.get("INITIALIZING"):
            start = (end - ts["INITIALIZING"]) / 1000.0
    flink = upload + savepoint + run + start
    warden = total - probation - flink
    lines.append("%s #%s %s: %.1fs = Flink %.1fs (upload %.1f, savepoint %.1f, jar run %.1f, job start %.1f) + Warden %.1fs + probation %.1fs" % (
        label, r["id"], r["kind"], total, flink, upload, savepoint, run, start, warden, probation))
    steps_txt = " ".join("%s=%.1f" % (s["step"], at_next - t(s["at"])) for s, at_next in zip(steps, [t(x["at"]) for x in steps[1:]] + [t(r["updated"])]))
    lines.append("    steps (s): " + steps_txt)
for l in lines:
    print("  time: " + l, file=sys.stderr)
with open(out, "a") as f:
    for l in lines:
        if not l.startswith("    "):
            f.write(l + "\n")
' "$FLINK_REST_URL" "$label" "${TIMINGS_FILE:-/dev/null}"
}

# ---------------------------------------------------------------- upgrade_ok
# `warden upgrade` to a good second jar while `warden run` watches: exit 0, the
# jar uploaded and submitted once from the stop-with-savepoint, restored from
# it (the counter continues), on probation, then done; one restart record.
scenario_upgrade_ok() {
  local dir=$SCENARIO_DIR jid rc=0 t rec new live first n
  jid=$(upgrade_start "$dir")
  first=$(upgrade_counts "$dir" 1)
  flink_build_job_release "$dir/clicks-v2.jar" demo.ClicksV2
  t=$(flink_now)
  warden_cli "$dir" upgrade --target "$WARDEN_TARGET" --job clicks --jar "$dir/clicks-v2.jar" \
    --entry-class demo.ClicksV2 >"$dir/upgrade.out" 2>"$dir/warden-upgrade.log" || rc=$?
  timing "upgrade_ok: warden upgrade (10s probation included)" "$t"
  sed 's/^/    | /' "$dir/upgrade.out" >&2
  check "warden upgrade exits 0 (got $rc)" test "$rc" = 0
  check "old run $jid is FINISHED" test "$(flink_job_state "$jid")" = FINISHED
  rec=$(warden_history "$dir" --restarts | jsonl 'rows[-1]')
  check "one restart record" test "$(warden_history "$dir" --restarts | jsonl 'len(rows)')" = 1
  check "it is an upgrade, ok" test "$(jsonl 'rows[0]["kind"] + " " + rows[0]["outcome"]' <<<"$rec")" = "upgrade ok"
  check "it submitted the uploaded clicks-v2.jar" contains "$(jsonl 'rows[0]["jar_id"]' <<<"$rec")" _clicks-v2.jar
  check "it went through probation" contains "$(jsonl '[s["step"] for s in rows[0]["steps"]]' <<<"$rec")" probation
  new=$(jsonl 'rows[0]["new_jid"]' <<<"$rec")
  live=$(live_jobs clicks | xargs)
  check "exactly one live clicks job, the new one ($live)" test "$live" = "$new"
  check "new job restored from the savepoint" \
    same_path "$(flink_restored_checkpoint_path "$new")" "$(jsonl 'rows[0]["location"]' <<<"$rec")"
  n=$(upgrade_counts "$dir" 2)
  flink_log "first counts: old run $first, upgraded run $n"
  check "the counter continues from the old run's state (first count $n > 1)" test "$n" -gt 1
  check "alerts.jsonl has an upgraded record" \
    test -n "$(jsonl 'next((r for r in rows if r["event"] == "upgraded"), None)' <"$dir/state/alerts.jsonl")"
  upgrade_figures "$dir" upgrade_ok
}

# ---------------------------------------------------------------- upgrade_rollback
# `warden upgrade` to a jar whose job throws at start (demo.ClicksBroken) while
# `warden run` watches: the new job fails, Warden cancels what is left of it,
# resubmits the old jar from the same savepoint (the counter continues), exits
# 1, and one `rolled_back` alert carries the new version's root cause.
scenario_upgrade_rollback() {
  local dir=$SCENARIO_DIR jid rc=0 t rows up rb live n alerts
  jid=$(upgrade_start "$dir")
  upgrade_counts "$dir" 1 >/dev/null
  flink_build_job_release "$dir/clicks-v2-broken.jar" demo.ClicksBroken
  t=$(flink_now)
  warden_cli "$dir" upgrade --target "$WARDEN_TARGET" --job clicks --jar "$dir/clicks-v2-broken.jar" \
    --entry-class demo.ClicksBroken >"$dir/upgrade.out" 2>"$dir/warden-upgrade.log" || rc=$?
  timing "upgrade_rollback: warden upgrade -> rolled back" "$t"
  sed 's/^/    | /' "$dir/upgrade.out" >&2
  grep -v '^[0-9]\{4\}-' "$dir/warden-upgrade.log" | sed 's/^/    ! /' >&2 || true
  check "warden upgrade exits 1 (got $rc)" test "$rc" = 1
  check "it says it rolled back" grep -q "rolled back to the previous jar" "$dir/warden-upgrade.log"
  rows=$(warden_history "$dir" --restarts)
  check "two restart records" test "$(jsonl 'len(rows)' <<<"$rows")" = 2
  up=$(jsonl 'rows[0]' <<<"$rows")
  rb=$(jsonl 'rows[1]' <<<"$rows")
  check "the upgrade failed and was rolled back" \
    bash -c '[[ "$1" == "upgrade failed at "*"rolled back" ]]' _ "$(jsonl 'rows[0]["kind"] + " " + rows[0]["outcome"]' <<<"$up")"
  check "the rollback undoes it and is ok" test "$(jsonl '"%s %s %s" % (rows[0]["kind"], rows[0]["rollback_of"], rows[0]["outcome"])' <<<"$rb")" \
    = "rollback $(jsonl 'rows[0]["id"]' <<<"$up") ok"
  check "the rollback used the same savepoint" \
    same_path "$(jsonl 'rows[0]["location"]' <<<"$rb")" "$(jsonl 'rows[0]["location"]' <<<"$up")"
  # The job is configured with `jar: {name: clicks.jar}`, and Flink's REST API does not say which upload a job runs
  # from: the previous release is the newest upload of that name (the scenarios with clusters of their own share
  # this cluster's upload directory, so it need not be the id uploaded at set-up, but it is the same file).
  check "the rollback submitted the old jar (an upload of clicks.jar, not the broken one)" \
    bash -c '[[ "$1" == *_clicks.jar ]]' _ "$(jsonl 'rows[0]["jar_id"]' <<<"$rb")"
  check "the broken job is not live" bash -c '[[ "$1" == FAILED || "$1" == CANCELED ]]' _ \
    "$(flink_job_state "$(jsonl 'rows[0]["new_jid"]' <<<"$up")")"
  live=$(live_jobs clicks | xargs)
  check "exactly one live clicks job, the rolled-back one ($live)" test "$live" = "$(jsonl 'rows[0]["new_jid"]' <<<"$rb")"
  check "it restored from the savepoint" \
    same_path "$(flink_restored_checkpoint_path "$live")" "$(jsonl 'rows[0]["location"]' <<<"$rb")"
  n=$(upgrade_counts "$dir" 2)
  check "the counter continues from the old run's state (first count $n > 1)" test "$n" -gt 1
  alerts=$(jsonl '[r for r in rows if r["event"] == "rolled_back"]' <"$dir/state/alerts.jsonl")
  check "one rolled_back alert" test "$(jsonl 'len(rows[0])' <<<"$alerts")" = 1
  check "it carries the root cause" contains "$alerts" "v2 cannot start: broken release"
  flink_log "alert: $(jsonl 'rows[0][0]["summary"]' <<<"$alerts")"
  upgrade_figures "$dir" upgrade_rollback
}

# ---------------------------------------------------------------- rescale_in_place
# A second cluster beside the shared one, started with `jobmanager.scheduler:
# adaptive` (four slots); clicks runs at parallelism 1.  A rule asks for
# `rescale(#{job: "clicks", parallelism: 2})` (bounds 1..2).  Warden must say it
# rescales in place, and afterwards the same run (same job id, no savepoint, no
# second run) has every vertex RUNNING at 2.  Prints Warden's part (reading the
# job and the cluster, deciding, the PUT) and Flink's part (until the vertices
# ran at 2) as Warden measured them, and the whole from the rule's ask.
scenario_rescale_in_place() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" jid wpid t entry out n live shape
  local -a args wargs
  flink_cluster_start_beside adaptive 90 "jobmanager.scheduler: adaptive"
  CLICKS_JAR_ID=$(flink_upload_jar "$FLINK_JOB_JAR")
  mapfile -t args < <(clicks_args "$marker")
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 1 60 >/dev/null
  check "the cluster runs the adaptive scheduler" test "$(flink_rest GET /jobmanager/config |
    _flink_json 'next((e["value"] for e in d if e["key"] == "jobmanager.scheduler"), None)')" = adaptive
  mkdir -p "$dir/scale"
  cat >"$dir/scale/pack.yaml" <<'YAML'
name: scale
version: 0.1.0
probes:
  - name: jobs
    every: 1s
    request: {path: /jobs/overview}
    rules: [to-two]
YAML
  cat >"$dir/scale/to-two.rhai" <<'RHAI'
if !obs.ok { return; }
for j in obs.body.jobs {
    if j.name == "clicks" && j.state == "RUNNING" {
        rescale(#{job: "clicks", jid: j.jid, parallelism: 2, cooldown: "1h", summary: "clicks to 2"});
    }
}
RHAI
  warden_write_config "$dir" "${wargs[@]}" --job 'parallelism: {min: 1, max: 2}'
  # The adaptive scheduler waits out its own cooldown before it rescales (about 30 s here): give it 3 minutes.
  sed -i -e "s|^pack_paths: \[\(.*\)\]$|pack_paths: [\1, $(_wq "$dir/scale")]|" \
    -e "s|^    verify_timeout: 60s$|    verify_timeout: 180s|" "$dir/warden.yaml"
  "$WARDEN_BIN" check --config "$dir/warden.yaml" >&2

  t=$(flink_now)
  wpid=$(warden_start "$dir")
  entry=""
  for ((n = 0; n < 400; n++)); do
    entry=$(warden_history "$dir" | jsonl 'next((e for e in rows if e["action"] == "rescale" and e["outcome"] != "started"), None)')
    [[ -n "$entry" ]] && break
    sleep 0.5
  done
  timing "rescale_in_place: warden start -> rescale verified" "$t"
  check "Warden journalled the rescale" test -n "$entry"
  flink_log "journal: $(jsonl '{k: rows[0][k] for k in ("outcome", "summary", "output")}' <<<"$entry")"
  out=$(jsonl 'rows[0]["output"]' <<<"$entry")
  expect "the rescale ended ok" test "$(jsonl 'rows[0]["outcome"]' <<<"$entry")" = ok
  expect "Warden says it used the in-place path" test "$(jsonl 'rows[0]["path"]' <<<"$out")" = in-place
  flink_log "Warden's reason for the path: $(jsonl 'rows[0]["why_path"]' <<<"$out")"
  expect "the run kept its job id" test "$(jsonl 'rows[0]["jid"]' <<<"$out")" = "$jid"
  shape=$(flink_vertex_parallelism "$jid" | xargs)
  flink_log "vertices: $shape"
  expect "every vertex of $jid runs at 2 ($shape)" test "$(flink_rest GET "/jobs/$jid" |
    _flink_json 'bool(d["vertices"]) and all(v["parallelism"] == 2 and v["status"] == "RUNNING" for v in d["vertices"])')" = true
  live=$(live_jobs clicks | xargs)
  expect "one live clicks job, the same run ($live)" test "$live" = "$jid"
  n=$(warden_history "$dir" --restarts | jsonl 'len(rows)')
  expect "no restart from a savepoint ($n restart records)" test "$n" = 0
  n=$(find "$dir/savepoints" -mindepth 1 -maxdepth 1 | wc -l)
  expect "no savepoint taken ($n)" test "$n" = 0
  n=$(jsonl 'len([r for r in rows if r["event"] == "rescaled"])' <"$dir/state/alerts.jsonl")
  expect "one rescaled notice ($n)" test "$n" = 1
  printf '%-40s %6ss\n' "rescale_in_place: Warden's part" \
    "$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1000))' "$(jsonl 'rows[0]["warden_ms"]' <<<"$out")")" \
    | tee -a "${TIMINGS_FILE:-/dev/null}" >&2
  printf '%-40s %6ss\n' "rescale_in_place: Flink's part" \
    "$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1000))' "$(jsonl 'rows[0]["flink_ms"]' <<<"$out")")" \
    | tee -a "${TIMINGS_FILE:-/dev/null}" >&2
  flink_stop_pid "$wpid" 10
}

# ---------------------------------------------------------------- rescale_savepoint
# The shared cluster runs the default scheduler: `warden rescale --parallelism 2`
# of clicks (parallelism 1) must say it goes through a savepoint restart (and
# why not in place), exit 0, leave exactly one live clicks run, a new one, with
# every vertex RUNNING at 2 and restored from the savepoint Warden took (the
# keyed counts come back from it).  Prints each step of the restart record's
# timeline, split into Warden's part and Flink's.
scenario_rescale_savepoint() {
  local dir=$SCENARIO_DIR marker="$SCENARIO_DIR/marker" jid rc=0 rec new sp live t
  local -a args wargs
  mapfile -t args < <(clicks_args "$marker")
  mapfile -t wargs < <(warden_args "${args[@]}")
  jid=$(flink_run_jar "$CLICKS_JAR_ID" --no-restart -- "${args[@]}")
  flink_wait_state "$jid" RUNNING 60 >/dev/null
  flink_wait_checkpoint "$jid" 1 60 >/dev/null
  warden_write_config "$dir" "${wargs[@]}" --flink-conf restart-strategy.type=none --job 'savepoint_mode: stop' \
    --job 'parallelism: {min: 1, max: 2}' --job 'upgrade: {probation: 5s}'

  t=$(flink_now)
  warden_cli "$dir" rescale --target "$WARDEN_TARGET" --job clicks --parallelism 2 \
    >"$dir/rescale.out" 2>"$dir/warden-rescale.log" || rc=$?
  timing "rescale_savepoint: warden rescale" "$t"
  sed 's/^/    | /' "$dir/rescale.out" >&2
  check "warden rescale exits 0 (got $rc)" test "$rc" = 0
  expect "it says it goes through a savepoint restart" grep -q "to parallelism 2 through a savepoint restart" "$dir/rescale.out"
  expect "it says why not in place" grep -q "in-place rescaling needs" "$dir/rescale.out"
  check "old run $jid is FINISHED" test "$(flink_job_state "$jid")" = FINISHED
  rec=$(warden_history "$dir" --restarts | jsonl 'rows[-1]')
  check "the restart record is a rescale to 2 that ended ok" \
    test "$(jsonl '[rows[0]["kind"], rows[0]["overrides"].get("parallelism"), rows[0]["outcome"]]' <<<"$rec")" = '["rescale", 2, "ok"]'
  sp=$(jsonl 'rows[0]["location"]' <<<"$rec")
  new=$(jsonl 'rows[0]["new_jid"]' <<<"$rec")
  live=$(live_jobs clicks | xargs)
  check "exactly one live clicks job, the new one ($live)" test "$live" = "$new"
  expect "every vertex of the new run is RUNNING at 2 ($(flink_vertex_parallelism "$new" | xargs))" \
    test "$(flink_rest GET "/jobs/$new" |
      _flink_json 'bool(d["vertices"]) and all(v["parallelism"] == 2 and v["status"] == "RUNNING" for v in d["vertices"])')" = true
  check "the savepoint is under jobs.clicks.savepoint_dir" contains "$sp" "$dir/savepoints/"
  expect "the new run restored its state from that savepoint" same_path "$(flink_restored_checkpoint_path "$new")" "$sp"
  # The timeline: Warden's part is deciding and asking; Flink's is the savepoint, the old run leaving, the
  # submission and the new run coming up (each wait includes up to one poll interval, 1 s); probation is the
  # configured wait (5 s here).
  python3 - "$rec" <<'PY' | tee -a "${TIMINGS_FILE:-/dev/null}" >&2
import json, sys
from datetime import datetime
r = json.loads(sys.argv[1])
steps = [(s["step"], datetime.fromisoformat(s["at"].replace("Z", "+00:00"))) for s in r["steps"]]
flink = {"savepoint-triggered", "state-chosen", "submitting", "submitted"}
parts = {"Warden": 0.0, "Flink": 0.0, "probation": 0.0}
for (a, ta), (b, tb) in zip(steps, steps[1:]):
    d = (tb - ta).total_seconds()
    who = "probation" if a == "probation" else ("Flink" if a in flink else "Warden")
    parts[who] += d
    print("%-40s %6.1fs  (%s)" % ("rescale_savepoint: " + a + " -> " + b, d, who))
for k, v in parts.items():
    print("%-40s %6.1fs" % ("rescale_savepoint: " + k + "'s part", v))
PY
}

# ------------------------------------------------------------------ runner

setup() {
  local t
  t=$(flink_now)
  flink_dist_ensure
  timing "setup: Flink $FLINK_VERSION distribution" "$t"

  warden_build_start # in the background while the cluster starts
  t=$(flink_now)
  flink_cluster_start 60
  timing "setup: cluster start (JM+TM ready)" "$t"

  t=$(flink_now)
  flink_build_job
  timing "setup: compile fixture job" "$t"

  t=$(flink_now)
  CLICKS_JAR_ID=$(flink_upload_jar "$FLINK_JOB_JAR")
  timing "setup: upload jar" "$t"

  t=$(flink_now)
  warden_build_wait
  timing "setup: warden binary ready (after the above)" "$t"
}

run_scenario() {
  local name=$1 t rc mark
  mark=$(flink_tracked_count)
  echo "=== scenario: $name (Flink $FLINK_VERSION)" >&2
  SCENARIO_DIR="$FLINK_WORK/scenario-$name"
  mkdir -p "$SCENARIO_DIR"
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
  if ((rc == 0)) && [[ -s "$SCENARIO_DIR/.expect-failed" ]]; then
    echo "  Warden misbehaved: $(paste -sd';' "$SCENARIO_DIR/.expect-failed")" >&2
    rc=1
  fi
  timing "scenario $name total" "$t"
  flink_stop_tracked_since "$mark" || true
  flink_cancel_all || true
  if ((rc == 0)); then
    echo "=== PASS: $name" >&2
  else
    warden_dump_logs "$SCENARIO_DIR"
    echo "=== FAIL: $name (exit $rc; files in $SCENARIO_DIR)" >&2
    flink_mark_failed
  fi
  SCENARIO_RC=$rc
}

main() {
  local -a selected=("$@") failed_names=()
  local s passed=0 failed=0 t0 rc
  ((${#selected[@]})) || selected=("${SCENARIOS[@]}")
  for s in "${selected[@]}"; do
    declare -F "scenario_$s" >/dev/null || { echo "unknown scenario: $s (have: ${SCENARIOS[*]} timing)" >&2; exit 2; }
  done
  if [[ " ${selected[*]} " == *" timing "* ]] && ((E2E_TIMING_RUNS < 1)); then E2E_TIMING_RUNS=5; fi

  t0=$(flink_now)
  flink_init
  TIMINGS_FILE="$FLINK_WORK/timings"
  setup

  for s in "${selected[@]}"; do
    # Not `if run_scenario` (or `||`): bash ignores `set -e` in everything a
    # condition runs, even in a subshell that sets it again, so failed checks
    # would not stop the scenario.  run_scenario returns 0 and sets SCENARIO_RC.
    run_scenario "$s"
    rc=$SCENARIO_RC
    if ((rc == 0)); then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$s"); fi
  done

  timing "total" "$t0"
  echo "--- timings (Flink $FLINK_VERSION) ---" >&2
  cat "$TIMINGS_FILE" >&2
  ((failed == 0)) || echo "failed scenarios: ${failed_names[*]}" >&2
  echo "real-flink: $passed passed, $failed failed"
  ((failed == 0))
}

main "$@"
