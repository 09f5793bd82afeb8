# shellcheck shell=bash
# flink-cluster.sh — sourceable helpers to run a throw-away standalone Apache
# Flink session cluster (1 JobManager + 1 TaskManager) on 127.0.0.1 for
# Warden's end-to-end tests.  Flink itself comes from PyPI
# (apache-flink-libraries), so nothing but a package registry is needed.
#
# Usage (see real-flink.sh):
#   source tests/e2e/flink-cluster.sh
#   flink_init                      # work dir + EXIT trap
#   flink_dist_ensure               # download/unpack Flink into the cache
#   flink_cluster_start             # config, JM, TM, wait for a TaskManager
#   flink_build_job                 # compiles tests/e2e/clicks-job -> $FLINK_JOB_JAR
#   jar_id=$(flink_upload_jar "$FLINK_JOB_JAR")
#   jid=$(flink_run_jar "$jar_id" --no-restart -- --name clicks --marker /tmp/m)
#   flink_wait_state "$jid" RUNNING 60
#
# Environment:
#   FLINK_VERSION        Flink version on PyPI (default 2.3.0)
#   WARDEN_E2E_CACHE     cache dir (default ~/.cache/warden-e2e)
#   WARDEN_E2E_KEEP      1 = always keep the work dir (default: kept on failure only)
#   WARDEN_E2E_JVM_OPTS  extra JVM options for JM/TM/BashJavaUtils (default
#                        -XX:TieredStopAtLevel=1; set empty to disable)
#   JAVA                 java binary (default: java on PATH); javac/jar next to it or on PATH
#
# Globals set for callers: FLINK_HOME FLINK_WORK FLINK_CONF_DIR FLINK_LOG_DIR
#   FLINK_REST_PORT FLINK_REST_URL FLINK_JOB_JAR FLINK_JOB_CLASS FLINK_MAJOR
#
# Every function prints diagnostics to stderr and results (ids, paths, states)
# to stdout.  Functions return non-zero on failure, so under `set -e` a failed
# helper stops the script.

[[ -n "${_FLINK_CLUSTER_SH_LOADED:-}" ]] && return 0
_FLINK_CLUSTER_SH_LOADED=1

FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
# shellcheck disable=SC2034  # for callers: 1 or 2
FLINK_MAJOR="${FLINK_VERSION%%.*}"
WARDEN_E2E_CACHE="${WARDEN_E2E_CACHE:-$HOME/.cache/warden-e2e}"
JAVA="${JAVA:-java}"
FLINK_E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FLINK_JOB_SRC="${FLINK_JOB_SRC:-$FLINK_E2E_DIR/clicks-job}"
FLINK_JOB_CLASS="${FLINK_JOB_CLASS:-demo.Clicks}"

FLINK_HOME=""
FLINK_WORK=""
FLINK_CONF_DIR=""
FLINK_LOG_DIR=""
FLINK_REST_PORT=""
FLINK_REST_URL=""
FLINK_JOB_JAR=""
FLINK_JM_PID=""
FLINK_TM_PID=""
_FLINK_CLEANUP_HOOKS=()
_FLINK_FAILED=0

# ---------------------------------------------------------------- utilities

flink_log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
flink_die() { flink_log "ERROR: $*"; _FLINK_FAILED=1; return 1; }

# flink_now: seconds since epoch with fraction (for timings)
flink_now() { printf '%s\n' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
# flink_elapsed START: seconds since START, one decimal
flink_elapsed() { python3 -c 'import sys,time; print("%.1f" % (time.time()-float(sys.argv[1])))' "$1"; }

# flink_free_port: a currently free TCP port on 127.0.0.1
flink_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# _flink_json EXPR: parse stdin as JSON into d and print the Python EXPR;
# prints nothing if the lookup fails (missing key, null, bad JSON).
_flink_json() {
  python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    v = eval(sys.argv[1], {"d": d})
except Exception:
    sys.exit(0)
if v is None:
    sys.exit(0)
if isinstance(v, (list, dict)):
    print(json.dumps(v))
elif isinstance(v, bool):
    print("true" if v else "false")
else:
    print(v)
' "$1"
}

# _pid_alive PID: process exists and is not a zombie
_pid_alive() {
  local pid=$1 st
  kill -0 "$pid" 2>/dev/null || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  [[ "$st" != "Z" ]]
}

# ---------------------------------------------------------------- processes

# flink_track_pid PID [LABEL]: stop PID on exit (also from subshells: the list
# lives in a file in the work dir).
flink_track_pid() {
  [[ -n "$FLINK_WORK" ]] || { flink_die "flink_track_pid: call flink_init first"; return 1; }
  printf '%s %s\n' "$1" "${2:-pid}" >>"$FLINK_WORK/pids"
}

# flink_tracked_count: number of pids tracked so far (see flink_stop_tracked_since)
flink_tracked_count() { if [[ -f "$FLINK_WORK/pids" ]]; then wc -l <"$FLINK_WORK/pids"; else echo 0; fi; }

# flink_stop_pid PID [GRACE_SECONDS=5]: TERM, wait, then KILL
flink_stop_pid() {
  local pid=$1 grace=${2:-5} i
  _pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    _pid_alive "$pid" || return 0
    sleep 0.1
  done
  flink_log "pid $pid did not stop after ${grace}s, sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do _pid_alive "$pid" || return 0; sleep 0.1; done
}

# flink_stop_tracked_since N: stop pids tracked after the first N entries
# (in reverse order); lets a runner clean up what one scenario started.
flink_stop_tracked_since() {
  local n=${1:-0} pid label
  [[ -f "$FLINK_WORK/pids" ]] || return 0
  while read -r pid label; do
    [[ -n "$pid" ]] || continue
    if _pid_alive "$pid"; then flink_log "stopping $label (pid $pid)"; flink_stop_pid "$pid"; fi
  done < <(tail -n +"$((n + 1))" "$FLINK_WORK/pids" | tac)
}

# flink_on_exit CMD...: run CMD (eval'd) during exit cleanup, before pids are stopped
flink_on_exit() { _FLINK_CLEANUP_HOOKS+=("$*"); }

# flink_mark_failed: make the cleanup keep the work dir
flink_mark_failed() { _FLINK_FAILED=1; }

_flink_exit_trap() {
  local rc=$? hook
  trap - EXIT INT TERM
  set +e
  for hook in "${_FLINK_CLEANUP_HOOKS[@]}"; do eval "$hook"; done
  if [[ -n "$FLINK_WORK" ]]; then
    flink_stop_tracked_since 0
    if [[ $rc -ne 0 || $_FLINK_FAILED -ne 0 || "${WARDEN_E2E_KEEP:-0}" == 1 ]]; then
      flink_log "work dir kept: $FLINK_WORK"
    else
      rm -rf "$FLINK_WORK"
    fi
  fi
  exit "$rc"
}

# flink_init [WORK_DIR]: create the work dir (mktemp -d unless given) and
# install the EXIT/INT/TERM trap that stops every tracked pid.
flink_init() {
  if [[ -n "${1:-}" ]]; then FLINK_WORK=$1; mkdir -p "$FLINK_WORK"
  else FLINK_WORK=$(mktemp -d "${TMPDIR:-/tmp}/warden-e2e.XXXXXX"); fi
  FLINK_CONF_DIR="$FLINK_WORK/conf"
  FLINK_LOG_DIR="$FLINK_WORK/log"
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR"
  : >"$FLINK_WORK/pids"
  trap _flink_exit_trap EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  flink_log "work dir: $FLINK_WORK"
}

# ---------------------------------------------------------------- distribution

# flink_dist_ensure: download apache-flink-libraries==$FLINK_VERSION from PyPI
# (once) and unpack its bin/lib/opt/plugins into
# $WARDEN_E2E_CACHE/flink-$FLINK_VERSION (once; ".complete" marks success).
# Sets FLINK_HOME.
flink_dist_ensure() {
  local dest="$WARDEN_E2E_CACHE/flink-$FLINK_VERSION" dl="$WARDEN_E2E_CACHE/downloads" archive
  FLINK_HOME="$dest"
  [[ -f "$dest/.complete" ]] && return 0
  mkdir -p "$dl"
  (
    # serialise concurrent runs on the same cache
    if command -v flock >/dev/null; then exec 9>"$WARDEN_E2E_CACHE/.lock-$FLINK_VERSION"; flock 9; fi
    [[ -f "$dest/.complete" ]] && exit 0
    archive=$(ls "$dl"/apache[-_]flink[-_]libraries-"$FLINK_VERSION"[-.]* 2>/dev/null | head -n1 || true)
    if [[ -z "$archive" ]]; then
      flink_log "downloading apache-flink-libraries==$FLINK_VERSION from PyPI (~250-350 MB)"
      python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        "apache-flink-libraries==$FLINK_VERSION" -d "$dl" >&2 ||
        { flink_log "ERROR: pip download failed"; exit 1; }
      archive=$(ls "$dl"/apache[-_]flink[-_]libraries-"$FLINK_VERSION"[-.]* 2>/dev/null | head -n1 || true)
      [[ -n "$archive" ]] || { flink_log "ERROR: no archive for $FLINK_VERSION in $dl"; exit 1; }
    fi
    flink_log "unpacking $(basename "$archive") into $dest"
    rm -rf "$dest" "$dest.tmp"
    python3 - "$archive" "$dest.tmp" <<'PY' || { flink_log "ERROR: unpack failed"; exit 1; }
import os, re, shutil, sys, tarfile, zipfile
archive, out = sys.argv[1], sys.argv[2]
if archive.endswith(".whl") or archive.endswith(".zip"):
    z = zipfile.ZipFile(archive)
    names = z.namelist()
    def member(n): return z.open(n)
else:
    t = tarfile.open(archive)
    infos = {m.name: m for m in t.getmembers() if m.isfile()}
    names = list(infos)
    def member(n): return t.extractfile(infos[n])
# The distribution root is the parent of lib/flink-dist-*.jar:
# pyflink/ in 2.x wheels, <sdist>/deps/ in 1.x sdists.
root = None
for n in names:
    m = re.match(r"(.*/)?lib/flink-dist[^/]*\.jar$", n)
    if m:
        root = m.group(1) or ""
        break
if root is None:
    sys.exit("no lib/flink-dist-*.jar in " + archive)
count = 0
for n in names:
    if not n.startswith(root) or n.endswith("/"):
        continue
    rel = n[len(root):]
    if rel.split("/")[0] not in ("bin", "lib", "opt", "plugins", "conf"):
        continue
    target = os.path.join(out, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with member(n) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    count += 1
print("unpacked %d files from %s" % (count, root or "/"), file=sys.stderr)
PY
    [[ -f "$dest.tmp/bin/bash-java-utils.jar" ]] || { flink_log "ERROR: bin/bash-java-utils.jar missing in $archive"; exit 1; }
    mv "$dest.tmp" "$dest"
    touch "$dest/.complete"
    # the archive is not needed any more; the .complete marker guards the unpack
    rm -f "$archive"
  ) || { flink_die "could not provide Flink $FLINK_VERSION"; return 1; }
}

# _flink_classpath: lib/*.jar sorted, flink-dist last (as bin/config.sh does)
_flink_classpath() {
  local cp="" dist="" j
  for j in "$FLINK_HOME"/lib/*.jar; do
    case "$(basename "$j")" in
      flink-dist*) dist=$j ;;
      *) cp="${cp:+$cp:}$j" ;;
    esac
  done
  printf '%s\n' "${cp:+$cp:}$dist"
}

# _flink_default_java_opts: env.java.opts.all from the config.yaml that ships
# inside flink-dist (the --add-opens/--add-exports Flink needs on Java 17)
_flink_default_java_opts() {
  local opts cache="$FLINK_HOME/.java-opts-all"
  if [[ -s "$cache" ]]; then cat "$cache"; return 0; fi
  opts=$(python3 - "$FLINK_HOME"/lib/flink-dist*.jar <<'PY' 2>/dev/null || true
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
text = z.read("config.yaml" if "config.yaml" in z.namelist() else "flink-conf.yaml").decode()
m = re.search(r"^\s*(?:env\.java\.opts\.all|all):\s*(--add-.*)$", text, re.M)
print(m.group(1).strip() if m else "")
PY
  )
  if [[ -n "$opts" ]]; then
    printf '%s\n' "$opts" >"$cache.$$" 2>/dev/null && mv "$cache.$$" "$cache" 2>/dev/null || true
  else
    opts="--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"
  fi
  printf '%s\n' "$opts"
}

# ---------------------------------------------------------------- config

# flink_write_config [KEY: VALUE ...]: write $FLINK_CONF_DIR/config.yaml (read
# by 2.x and, in preference to flink-conf.yaml, by 1.19+) and log4j.properties.
# Extra "key: value" arguments (flat keys) replace the defaults of the same key
# (Flink 2.x rejects duplicate keys) or are appended.
flink_write_config() {
  [[ -n "$FLINK_WORK" ]] || { flink_die "flink_write_config: call flink_init first"; return 1; }
  [[ -n "$FLINK_REST_PORT" ]] || FLINK_REST_PORT=$(flink_free_port)
  local rpc_port extra keys=""
  rpc_port=$(flink_free_port)
  for extra in "$@"; do keys+="${extra%%:*}"$'\n'; done
  FLINK_REST_URL="http://127.0.0.1:$FLINK_REST_PORT"
  mkdir -p "$FLINK_WORK"/{checkpoints,savepoints,tmp,web-upload,blobs}
  {
    echo "# generated by tests/e2e/flink-cluster.sh (Flink $FLINK_VERSION)"
    echo "env.java.opts.all: $(_flink_default_java_opts)"
    cat <<EOF
jobmanager.rpc.address: localhost
jobmanager.rpc.port: $rpc_port
jobmanager.bind-host: 127.0.0.1
jobmanager.memory.process.size: 1024m
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.memory.process.size: 1280m
taskmanager.numberOfTaskSlots: 4
parallelism.default: 1
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $FLINK_REST_PORT
rest.bind-port: $FLINK_REST_PORT
web.submit.enable: true
web.cancel.enable: true
web.upload.dir: $FLINK_WORK/web-upload
io.tmp.dirs: $FLINK_WORK/tmp
blob.storage.directory: $FLINK_WORK/blobs
execution.checkpointing.dir: file://$FLINK_WORK/checkpoints
execution.checkpointing.savepoint-dir: file://$FLINK_WORK/savepoints
execution.checkpointing.externalized-checkpoint-retention: RETAIN_ON_CANCELLATION
execution.checkpointing.num-retained: 3
jobstore.expiration-time: 3600
heartbeat.timeout: 20000
web.refresh-interval: 500
rest.cache.execution-graph.timeout: 500
rest.cache.checkpoint-statistics.timeout: 500
cluster.registration.error-delay: 1000
cluster.registration.refused-registration-delay: 1000
cluster.registration.max-timeout: 5000
EOF
  } | awk -v keys="$keys" 'BEGIN { n = split(keys, k, "\n"); for (i = 1; i <= n; i++) if (k[i] != "") drop[k[i]] = 1 }
      { key = $0; sub(/:.*/, "", key); if (!(key in drop)) print }' >"$FLINK_CONF_DIR/config.yaml"
  for extra in "$@"; do echo "$extra"; done >>"$FLINK_CONF_DIR/config.yaml"
  cat >"$FLINK_CONF_DIR/log4j.properties" <<'EOF'
monitorInterval = 30
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = INFO
logger.akka.name = akka
logger.akka.level = INFO
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = WARN
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = INFO
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
logger.shaded_netty.name = org.apache.flink.shaded.netty4.io.netty.channel.DefaultChannelPipeline
logger.shaded_netty.level = OFF
appender.main.name = MainAppender
appender.main.type = File
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
EOF
}

# ---------------------------------------------------------------- cluster

# _flink_extra_jvm_opts: WARDEN_E2E_JVM_OPTS, default C1-only JIT (faster
# startup on small machines; set WARDEN_E2E_JVM_OPTS= to disable)
_flink_extra_jvm_opts() { printf '%s\n' "${WARDEN_E2E_JVM_OPTS--XX:TieredStopAtLevel=1}"; }

# _flink_resource_params JM|TM: prints two lines, JVM params and dynamic configs
_flink_resource_params() {
  local what=$1 out lines
  local -a extra_args
  read -r -a extra_args <<<"$(_flink_extra_jvm_opts)"
  out=$("$JAVA" ${extra_args[@]+"${extra_args[@]}"} -cp "$FLINK_HOME/bin/bash-java-utils.jar:$(_flink_classpath)" \
    org.apache.flink.runtime.util.bash.BashJavaUtils "GET_${what}_RESOURCE_PARAMS" \
    --configDir "$FLINK_CONF_DIR" 2>&1) || { printf '%s\n' "$out" | tail -n 30 >&2; flink_die "BashJavaUtils GET_${what}_RESOURCE_PARAMS failed"; return 1; }
  lines=$(printf '%s\n' "$out" | sed -n 's/^BASH_JAVA_UTILS_EXEC_RESULT://p' | tail -n 2)
  if [[ $(printf '%s\n' "$lines" | wc -l) -ne 2 ]]; then
    printf '%s\n' "$out" | tail -n 30 >&2
    flink_die "unexpected BashJavaUtils output for $what"; return 1
  fi
  printf '%s\n' "$lines"
}

# _flink_start_process ROLE MAIN_CLASS PARAMS: start a JM/TM JVM in the
# background; PARAMS is the output of _flink_resource_params
_flink_start_process() {
  local role=$1 main=$2 params=$3 jvm dyn log pid
  local -a java_opts jvm_args dyn_args extra_args
  jvm=$(sed -n 1p <<<"$params")
  dyn=$(sed -n 2p <<<"$params")
  read -r -a java_opts <<<"$(_flink_default_java_opts)"
  read -r -a jvm_args <<<"$jvm"
  read -r -a dyn_args <<<"$dyn"
  read -r -a extra_args <<<"$(_flink_extra_jvm_opts)"
  log="$FLINK_LOG_DIR/$role.log"
  (
    cd "$FLINK_WORK" || exit 1
    export FLINK_HOME FLINK_CONF_DIR FLINK_LOG_DIR
    export FLINK_BIN_DIR="$FLINK_HOME/bin" FLINK_LIB_DIR="$FLINK_HOME/lib" \
      FLINK_OPT_DIR="$FLINK_HOME/opt" FLINK_PLUGINS_DIR="$FLINK_HOME/plugins"
    exec "$JAVA" "${jvm_args[@]}" "${java_opts[@]}" ${extra_args[@]+"${extra_args[@]}"} \
      "-Dlog.file=$log" \
      "-Dlog4j.configuration=file:$FLINK_CONF_DIR/log4j.properties" \
      "-Dlog4j.configurationFile=file:$FLINK_CONF_DIR/log4j.properties" \
      -classpath "$(_flink_classpath)" "$main" \
      --configDir "$FLINK_CONF_DIR" "${dyn_args[@]}"
  ) >"$FLINK_LOG_DIR/$role.out" 2>&1 </dev/null &
  pid=$!
  flink_track_pid "$pid" "$role"
  printf '%s\n' "$pid"
}

# flink_log_tail [N=40] [ROLE=jobmanager]: last N lines of a cluster log (stderr)
flink_log_tail() {
  local n=${1:-40} role=${2:-jobmanager} f
  for f in "$FLINK_LOG_DIR/$role.log" "$FLINK_LOG_DIR/$role.out"; do
    [[ -s "$f" ]] || continue
    echo "----- last $n lines of $f -----" >&2
    tail -n "$n" "$f" >&2
  done
  echo "-----" >&2
}

# flink_cluster_start [TIMEOUT=60] [KEY: VALUE ...]: write the config, start a
# JobManager and a TaskManager, wait until /overview reports >= 1 TaskManager.
flink_cluster_start() {
  local timeout=${1:-60}
  [[ $# -gt 0 ]] && shift
  [[ -n "$FLINK_HOME" ]] || flink_dist_ensure || return 1
  flink_write_config "$@" || return 1
  local jm_params tm_params tm_job
  # BashJavaUtils for JM and TM in parallel (each is a JVM start)
  _flink_resource_params TM >"$FLINK_WORK/tm-params" &
  tm_job=$!
  jm_params=$(_flink_resource_params JM) || { wait "$tm_job" || true; return 1; }
  wait "$tm_job" || return 1
  tm_params=$(cat "$FLINK_WORK/tm-params")
  FLINK_JM_PID=$(_flink_start_process jobmanager org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint "$jm_params") || return 1
  FLINK_TM_PID=$(_flink_start_process taskmanager org.apache.flink.runtime.taskexecutor.TaskManagerRunner "$tm_params") || return 1
  flink_log "Flink $FLINK_VERSION starting: JM pid $FLINK_JM_PID, TM pid $FLINK_TM_PID, REST $FLINK_REST_URL"
  flink_wait_ready "$timeout"
}

# flink_cluster_start_beside NAME [TIMEOUT=60] [KEY: VALUE ...]: start another
# cluster (own config, logs, temp, blob and upload dirs under $FLINK_WORK/NAME,
# a new REST port) next to the shared one, e.g. with `jobmanager.scheduler:
# adaptive`; the globals (FLINK_REST_URL, FLINK_JM_PID, ...) then point at it,
# so call it in a scenario's subshell.  Its pids are tracked (stopped after the
# scenario).  FLINK_JOB_JAR must be built already.
flink_cluster_start_beside() {
  local name=$1 timeout=${2:-60} base
  shift 2 || shift $#
  base="$FLINK_WORK/$name"
  mkdir -p "$base"/{conf,log,tmp,blobs,web-upload}
  FLINK_CONF_DIR="$base/conf" FLINK_LOG_DIR="$base/log" FLINK_REST_PORT="" FLINK_JM_PID="" FLINK_TM_PID=""
  flink_cluster_start "$timeout" "io.tmp.dirs: $base/tmp" "blob.storage.directory: $base/blobs" \
    "web.upload.dir: $base/web-upload" "$@"
}

# flink_vertex_parallelism JID: the vertices' parallelism and status, one
# `name=parallelism/status` per line
flink_vertex_parallelism() {
  flink_rest GET "/jobs/$1" | _flink_json '"\n".join("%s=%s/%s" % (v["name"], v["parallelism"], v["status"]) for v in d["vertices"])'
}

# flink_wait_ready [TIMEOUT=60] [MIN_TMS=1]: wait for GET /overview taskmanagers >= MIN_TMS
flink_wait_ready() {
  local timeout=${1:-60} min=${2:-1} deadline tms
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if [[ -n "$FLINK_JM_PID" ]] && ! _pid_alive "$FLINK_JM_PID"; then
      flink_log_tail 60 jobmanager; flink_die "JobManager (pid $FLINK_JM_PID) exited"; return 1
    fi
    if [[ -n "$FLINK_TM_PID" ]] && ! _pid_alive "$FLINK_TM_PID"; then
      flink_log_tail 60 taskmanager; flink_die "TaskManager (pid $FLINK_TM_PID) exited"; return 1
    fi
    tms=$(curl -sf --max-time 2 "$FLINK_REST_URL/overview" 2>/dev/null | _flink_json 'd["taskmanagers"]' || true)
    if [[ -n "$tms" ]] && ((tms >= min)); then
      flink_log "cluster ready: $tms TaskManager(s) at $FLINK_REST_URL"
      return 0
    fi
    sleep 0.5
  done
  flink_log_tail 40 jobmanager
  flink_log_tail 20 taskmanager
  flink_die "cluster not ready after ${timeout}s (taskmanagers=${tms:-none})"
}

# flink_cluster_stop: stop TM then JM (also done by the exit trap)
flink_cluster_stop() {
  [[ -n "$FLINK_TM_PID" ]] && flink_stop_pid "$FLINK_TM_PID"
  [[ -n "$FLINK_JM_PID" ]] && flink_stop_pid "$FLINK_JM_PID"
  FLINK_TM_PID="" FLINK_JM_PID=""
}

# flink_jobmanager_kill: kill -9 the JobManager process (a crash: no clean
# shutdown, no chance to suspend jobs); the TaskManager keeps running.
flink_jobmanager_kill() {
  local i
  [[ -n "$FLINK_JM_PID" ]] || { flink_die "flink_jobmanager_kill: no JobManager running"; return 1; }
  kill -KILL "$FLINK_JM_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do _pid_alive "$FLINK_JM_PID" || break; sleep 0.1; done
  _pid_alive "$FLINK_JM_PID" && { flink_die "JobManager (pid $FLINK_JM_PID) survived kill -9"; return 1; }
  flink_log "killed JobManager (pid $FLINK_JM_PID)"
  FLINK_JM_PID=""
}

# flink_jobmanager_start [TIMEOUT=90]: start a new JobManager process with the
# cluster's config (same REST and RPC ports) after flink_jobmanager_kill; wait
# until the TaskManager has registered with it again.  Without HA the new
# JobManager knows no jobs and no uploaded jars.
flink_jobmanager_start() {
  local timeout=${1:-90} jm_params
  [[ -z "$FLINK_JM_PID" ]] || { flink_die "flink_jobmanager_start: JobManager $FLINK_JM_PID still running"; return 1; }
  jm_params=$(_flink_resource_params JM) || return 1
  FLINK_JM_PID=$(_flink_start_process jobmanager org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint "$jm_params") || return 1
  flink_log "JobManager started again: pid $FLINK_JM_PID"
  flink_wait_ready "$timeout"
}

# ---------------------------------------------------------------- fixture job

# flink_build_job [OUT_JAR]: compile $FLINK_JOB_SRC/src/main/java against
# $FLINK_HOME/lib into a jar (default $FLINK_WORK/clicks.jar); sets FLINK_JOB_JAR.
flink_build_job() {
  local out=${1:-$FLINK_WORK/clicks.jar} classes javac_bin jar_bin
  javac_bin=$(command -v javac || true)
  jar_bin=$(command -v jar || true)
  [[ -n "$javac_bin" && -n "$jar_bin" ]] || { flink_die "javac/jar not found on PATH"; return 1; }
  classes=$(mktemp -d "$FLINK_WORK/classes.XXXXXX")
  local -a srcs
  mapfile -t srcs < <(find "$FLINK_JOB_SRC/src/main/java" -name '*.java' | sort)
  ((${#srcs[@]})) || { flink_die "no sources under $FLINK_JOB_SRC/src/main/java"; return 1; }
  "$javac_bin" -nowarn -encoding UTF-8 -cp "$(_flink_classpath)" -d "$classes" "${srcs[@]}" >&2 ||
    { flink_die "javac failed for the fixture job (Flink $FLINK_VERSION)"; return 1; }
  "$jar_bin" --create --file "$out" --main-class "$FLINK_JOB_CLASS" -C "$classes" . >&2 ||
    { flink_die "jar failed"; return 1; }
  rm -rf "$classes"
  # shellcheck disable=SC2034
  FLINK_JOB_JAR=$out
}

# flink_build_job_release OUT_JAR MAIN_CLASS: the fixture job plus the "next
# releases" in $FLINK_JOB_SRC/src/v2/java (demo.ClicksV2, demo.ClicksBroken),
# with MAIN_CLASS as the manifest's main class (upgrade scenarios).
flink_build_job_release() {
  local out=$1 main=$2 classes
  classes=$(mktemp -d "$FLINK_WORK/classes.XXXXXX")
  local -a srcs
  mapfile -t srcs < <(find "$FLINK_JOB_SRC/src/main/java" "$FLINK_JOB_SRC/src/v2/java" -name '*.java' | sort)
  javac -nowarn -encoding UTF-8 -cp "$(_flink_classpath)" -d "$classes" "${srcs[@]}" >&2 ||
    { flink_die "javac failed for the fixture job's releases (Flink $FLINK_VERSION)"; return 1; }
  jar --create --file "$out" --main-class "$main" -C "$classes" . >&2 || { flink_die "jar failed"; return 1; }
  rm -rf "$classes"
}

# flink_job_timestamps JID: "<state>=<ms>" of every state the job reached
flink_job_timestamps() {
  flink_rest GET "/jobs/$1" | _flink_json '"\n".join("%s=%s" % (k, v) for k, v in d.get("timestamps", {}).items() if v)'
}

# ---------------------------------------------------------------- REST

# flink_rest METHOD PATH [JSON_BODY]: call the REST API; prints the body,
# returns 1 (and prints the body to stderr) on HTTP >= 400.
flink_rest() {
  local method=$1 path=$2 body=${3:-} out code
  local -a args=(-sS --max-time 30 -X "$method" -w '\n%{http_code}')
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  out=$(curl "${args[@]}" "$FLINK_REST_URL$path") || { flink_log "curl $method $path failed"; return 1; }
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  if ((code >= 400)); then
    # REST errors carry whole stack traces: keep the first line and the causes
    flink_log "HTTP $code for $method $path: $(printf '%s' "$out" | python3 -c '
import json, sys
raw = sys.stdin.read()
try:
    errs = json.loads(raw).get("errors", [raw])
except Exception:
    errs = [raw]
for e in errs:
    lines = str(e).splitlines()
    keep = lines[:1] + [l for l in lines[1:] if l.startswith("Caused by")]
    print("\n    ".join(keep[:1] + keep[-3:] if len(keep) > 4 else keep))
')"
    return 1
  fi
  printf '%s\n' "$out"
}

# flink_upload_jar JAR: POST /jars/upload; prints the jar id
flink_upload_jar() {
  local jar=$1 out id
  out=$(curl -sS --max-time 120 -X POST -H 'Expect:' -F "jarfile=@$jar;type=application/x-java-archive" \
    "$FLINK_REST_URL/jars/upload") || { flink_die "jar upload failed"; return 1; }
  id=$(_flink_json 'd["filename"].rsplit("/",1)[-1]' <<<"$out")
  [[ -n "$id" ]] || { flink_die "jar upload: unexpected answer: $out"; return 1; }
  printf '%s\n' "$id"
}

# flink_run_jar JAR_ID [--class C] [--savepoint PATH] [--allow-non-restored]
#               [--no-restart] [--parallelism N] [--conf KEY=VALUE]... [-- PROGRAM_ARGS...]
# POST /jars/:id/run; prints the job id.  --no-restart sets
# flinkConfiguration restart-strategy.type=none.
flink_run_jar() {
  local jar_id=$1
  shift
  local cls=$FLINK_JOB_CLASS savepoint="" allow=false parallelism="" body out jid
  local -a confs=() pargs=()
  while (($#)); do
    case $1 in
      --class) cls=$2; shift 2 ;;
      --savepoint) savepoint=$2; shift 2 ;;
      --allow-non-restored) allow=true; shift ;;
      --no-restart) confs+=("restart-strategy.type=none"); shift ;;
      --parallelism) parallelism=$2; shift 2 ;;
      --conf) confs+=("$2"); shift 2 ;;
      --) shift; pargs=("$@"); break ;;
      *) flink_die "flink_run_jar: unknown option $1"; return 1 ;;
    esac
  done
  body=$(python3 - "$cls" "$savepoint" "$allow" "$parallelism" "${#confs[@]}" "${confs[@]}" "${pargs[@]}" <<'PY'
import json, sys
cls, sp, allow, par, n = sys.argv[1:6]
n = int(n)
confs = sys.argv[6:6 + n]
pargs = sys.argv[6 + n:]
b = {"entryClass": cls, "programArgsList": pargs}
if sp:
    b["savepointPath"] = sp
    b["allowNonRestoredState"] = allow == "true"
if par:
    b["parallelism"] = int(par)
if confs:
    b["flinkConfiguration"] = dict(c.split("=", 1) for c in confs)
print(json.dumps(b))
PY
  )
  out=$(flink_rest POST "/jars/$jar_id/run" "$body") || { flink_log_tail 30; flink_die "job submission failed"; return 1; }
  jid=$(_flink_json 'd["jobid"]' <<<"$out")
  [[ -n "$jid" ]] || { flink_die "submission: unexpected answer: $out"; return 1; }
  printf '%s\n' "$jid"
}

# flink_job_state JID: prints RUNNING, FAILED, ... (empty if unknown)
flink_job_state() {
  curl -sf --max-time 10 "$FLINK_REST_URL/jobs/$1" 2>/dev/null | _flink_json 'd["state"]' || true
}

# flink_wait_state JID STATE[,STATE...] [TIMEOUT=60]: wait until the job is in
# one of the states; prints it.  Fails early if the job reaches a terminal
# state that was not asked for.
flink_wait_state() {
  local jid=$1 want=$2 timeout=${3:-60} deadline st=""
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    st=$(flink_job_state "$jid")
    if [[ -n "$st" && ",$want," == *",$st,"* ]]; then printf '%s\n' "$st"; return 0; fi
    case $st in
      FAILED | CANCELED | FINISHED)
        flink_log "job $jid is $st, wanted $want; exception:"
        flink_rest GET "/jobs/$jid/exceptions" 2>/dev/null | _flink_json 'd.get("root-exception") or d.get("exceptionHistory",{}).get("entries",[{}])[0].get("stacktrace")' | head -n 15 >&2 || true
        flink_log_tail 30
        flink_die "job $jid reached $st instead of $want"
        return 1 ;;
    esac
    sleep 0.5
  done
  flink_log_tail 40
  flink_die "timeout after ${timeout}s waiting for job $jid to be $want (last state: ${st:-unknown})"
}

# flink_wait_overview_state JID STATE[,STATE...] [TIMEOUT=60]: like
# flink_wait_state, but reads GET /jobs/overview only.  /jobs/:jid shares
# Flink's execution-graph cache (rest.cache.execution-graph.timeout) with
# /jobs/:jid/exceptions: polling it around a failure makes the next
# exceptions answer of another client stale.  Prints the state.
flink_wait_overview_state() {
  local jid=$1 want=$2 timeout=${3:-60} deadline st=""
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    st=$(curl -sf --max-time 10 "$FLINK_REST_URL/jobs/overview" 2>/dev/null |
      _flink_json "next((j['state'] for j in d['jobs'] if j['jid'] == '$jid'), None)" || true)
    if [[ -n "$st" && ",$want," == *",$st,"* ]]; then printf '%s\n' "$st"; return 0; fi
    case $st in
      FAILED | CANCELED | FINISHED) flink_die "job $jid reached $st instead of $want"; return 1 ;;
    esac
    sleep 0.2
  done
  flink_die "timeout after ${timeout}s waiting for job $jid to be $want in /jobs/overview (last: ${st:-unknown})"
}

# flink_checkpoints JID: raw JSON of GET /jobs/:jid/checkpoints
flink_checkpoints() { flink_rest GET "/jobs/$1/checkpoints"; }

# flink_completed_checkpoints JID: number of completed checkpoints
flink_completed_checkpoints() {
  local n
  n=$(curl -sf --max-time 10 "$FLINK_REST_URL/jobs/$1/checkpoints" 2>/dev/null | _flink_json 'd["counts"]["completed"]' || true)
  printf '%s\n' "${n:-0}"
}

# flink_latest_checkpoint_path JID: latest.completed.external_path (may be empty)
flink_latest_checkpoint_path() {
  curl -sf --max-time 10 "$FLINK_REST_URL/jobs/$1/checkpoints" 2>/dev/null | _flink_json 'd["latest"]["completed"]["external_path"]' || true
}

# flink_restored_checkpoint_path JID: latest.restored.external_path (may be empty)
flink_restored_checkpoint_path() {
  curl -sf --max-time 10 "$FLINK_REST_URL/jobs/$1/checkpoints" 2>/dev/null | _flink_json 'd["latest"]["restored"]["external_path"]' || true
}

# flink_wait_checkpoint JID [MIN_COMPLETED=1] [TIMEOUT=60]: prints the latest completed path
flink_wait_checkpoint() {
  local jid=$1 min=${2:-1} timeout=${3:-60} deadline n=0
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    n=$(flink_completed_checkpoints "$jid")
    if ((n >= min)); then flink_latest_checkpoint_path "$jid"; return 0; fi
    sleep 0.5
  done
  flink_log_tail 40
  flink_die "timeout after ${timeout}s waiting for $min completed checkpoint(s) of $jid (have $n)"
}

# flink_wait_restored JID [TIMEOUT=30]: prints latest.restored.external_path once set
flink_wait_restored() {
  local jid=$1 timeout=${2:-30} deadline p
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    p=$(flink_restored_checkpoint_path "$jid")
    [[ -n "$p" ]] && { printf '%s\n' "$p"; return 0; }
    sleep 0.5
  done
  flink_log_tail 40
  flink_die "timeout after ${timeout}s: job $jid reports no restored checkpoint"
}

# flink_local_path PATH: strip file: / file:// and a trailing /_metadata
flink_local_path() {
  local p=$1
  p=${p#file://}
  p=${p#file:}
  p=${p%/}
  p=${p%/_metadata}
  printf '%s\n' "$p"
}

# flink_cancel JID [WAIT_TIMEOUT=30]: PATCH /jobs/:jid?mode=cancel, wait for CANCELED
flink_cancel() {
  local jid=$1 timeout=${2:-30}
  flink_rest PATCH "/jobs/$jid?mode=cancel" >/dev/null || return 1
  flink_wait_state "$jid" CANCELED,FAILED,FINISHED "$timeout" >/dev/null
}

# flink_jobs [STATE]: "jid state name" lines from /jobs/overview, newest first
flink_jobs() {
  flink_rest GET /jobs/overview | python3 -c '
import json, sys
want = sys.argv[1] if len(sys.argv) > 1 else ""
for j in sorted(json.load(sys.stdin).get("jobs", []), key=lambda j: -j.get("start-time", 0)):
    if not want or j["state"] == want:
        print(j["jid"], j["state"], j["name"])
' "$@"
}

# flink_jobs_by_name NAME [STATE]: job ids with that name (newest first)
flink_jobs_by_name() {
  local name=$1 state=${2:-}
  flink_jobs ${state:+"$state"} | awk -v n="$name" '{ jid=$1; $1=""; $2=""; sub(/^  /, ""); if ($0 == n) print jid }'
}

# flink_cancel_all: cancel every non-terminal job (between scenarios)
flink_cancel_all() {
  local jid st name
  while read -r jid st name; do
    case $st in
      RUNNING | CREATED | INITIALIZING | RESTARTING | FAILING | RECONCILING)
        flink_log "cancelling leftover job $jid ($name, $st)"
        flink_cancel "$jid" || true ;;
    esac
  done < <(flink_jobs 2>/dev/null || true)
}

# flink_trigger_savepoint JID [DIR]: POST /jobs/:jid/savepoints; prints the trigger id
flink_trigger_savepoint() {
  local jid=$1 dir=${2:-$FLINK_WORK/savepoints} body
  body=$(python3 -c 'import json,sys; print(json.dumps({"target-directory": "file://"+sys.argv[1], "cancel-job": False}))' "$dir")
  flink_rest POST "/jobs/$jid/savepoints" "$body" | _flink_json 'd["request-id"]'
}

# flink_savepoint_status JID TRIGGER_ID: prints "IN_PROGRESS", "COMPLETED <path>" or "FAILED <cause>"
flink_savepoint_status() {
  flink_rest GET "/jobs/$1/savepoints/$2" | python3 -c '
import json, sys
d = json.load(sys.stdin)
st = d.get("status", {}).get("id", "")
op = d.get("operation") or {}
if st == "COMPLETED":
    if "location" in op: print("COMPLETED", op["location"])
    else: print("FAILED", json.dumps(op.get("failure-cause", op))[:500])
else:
    print(st)
'
}
