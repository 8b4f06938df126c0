#!/usr/bin/env bash
# A multi-node Ray cluster on this machine over loopback: one head node and N
# worker nodes, each its own raylet with its own resources, token auth on.
#
#   cluster/local_cluster.sh start [--workers N] [--head-cpus C] [--worker-cpus C]
#                                  [--head-resources JSON] [--worker-resources JSON]
#                                  [--object-store-mb M] [--dir DIR]
#   cluster/local_cluster.sh env    [--dir DIR]   # exports for clients: eval "$(... env)"
#   cluster/local_cluster.sh status [--dir DIR]   # `ray status` against this cluster
#   cluster/local_cluster.sh stop   [--dir DIR]   # stops exactly the processes this cluster started
#
# Every node gets the custom resources "node_<name>": 1 plus "head_node": 1 (head)
# or "worker_node": 1 (workers), so work can be pinned to a node, e.g. RLlib's
# config.env_runners(custom_resources_per_env_runner={"worker_node": 0.1}).
#
# Isolation from other Ray users of the machine:
# * every node has its own --temp-dir under DIR, so this cluster never writes
#   /tmp/ray/ray_current_cluster (a plain `ray.init()` elsewhere will not join it);
# * all ports are free ports picked here (or --port / --dashboard-port), bound to 127.0.0.1;
# * `stop` kills by PID only: the processes whose command line names this cluster's
#   temp dirs or (the head's Ray Client server) its GCS port, and their descendants
#   (the Ray workers, job drivers). It never runs `ray stop`, which would stop every Ray
#   on the machine.
#
# Token authentication stays on: `start` writes a fresh token to DIR/auth_token (mode 600)
# and starts every node with RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=DIR/auth_token.
# Clients (ray status, ray job submit, ray.init, JobSubmissionClient) need the same two
# variables; `env` prints them together with RAY_ADDRESS and RAY_API_SERVER_ADDRESS.
#
# Python: the nodes run $PYTHON (default `python`) through the `ray` CLI installed beside it
# ($RAY_CLI overrides), so a venv's cluster uses that venv even when it is not activated.
set -euo pipefail

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; }

cmd="${1:-}"; [ $# -gt 0 ] && shift
DIR="${O2O_CLUSTER_DIR:-/tmp/o2o-cluster}"
WORKERS=1
HEAD_CPUS=1
WORKER_CPUS=2
HEAD_RESOURCES=""
WORKER_RESOURCES=""
OBJECT_STORE_MB=300
GCS_PORT=""
DASH_PORT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        --workers|-w) WORKERS="$2"; shift 2 ;;
        --head-cpus) HEAD_CPUS="$2"; shift 2 ;;
        --worker-cpus) WORKER_CPUS="$2"; shift 2 ;;
        --head-resources) HEAD_RESOURCES="$2"; shift 2 ;;
        --worker-resources) WORKER_RESOURCES="$2"; shift 2 ;;
        --object-store-mb) OBJECT_STORE_MB="$2"; shift 2 ;;
        --port) GCS_PORT="$2"; shift 2 ;;
        --dashboard-port) DASH_PORT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "local_cluster.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-python}"
STATE="$DIR/cluster.env"

# The nodes run the Python of the `ray` CLI that starts them (raylet workers, dashboard, job
# drivers' agents), so use the CLI installed beside $PYTHON, not whichever `ray` is first on
# PATH: with a venv that is not activated that would be another installation's Ray.
ray_cli() {
    local bin
    bin=$("$PY" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "ray"))' 2>/dev/null || true)
    if [ -n "${RAY_CLI:-}" ]; then "$RAY_CLI" "$@"
    elif [ -n "$bin" ] && [ -x "$bin" ]; then "$bin" "$@"
    else "$PY" -m ray.scripts.scripts "$@"
    fi
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

merge_json() {  # merge_json BASE_JSON EXTRA_JSON -> one JSON object
    "$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2] or "{}")); print(json.dumps(d))' "$1" "$2"
}

# Processes of this cluster: command line names one of its temp dirs, or is the head's Ray Client
# server (its command line names only the GCS address; `ray start` exits, so it is no node's
# descendant), plus all their descendants.
cluster_pids() {
    local roots pid cmdline port=""
    [ -f "$DIR/gcs_port" ] && port=$(cat "$DIR/gcs_port")
    roots=$(for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = "$$" ] && continue
        cmdline=$( { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null || true)
        case "$cmdline" in
            *"$DIR/n"*) echo "$pid" ;;
            *ray.util.client.server*) [ -n "$port" ] && case "$cmdline" in *" --address="*":$port "*) echo "$pid" ;; esac ;;
        esac
    done; true)
    [ -z "$roots" ] && return 0
    local all="$roots" frontier="$roots" children
    while [ -n "$frontier" ]; do
        children=""
        for pid in $frontier; do
            children="$children $(cat /proc/"$pid"/task/*/children 2>/dev/null || true)"
        done
        frontier=$(echo $children)
        all="$all $frontier"
    done
    echo $all | tr ' ' '\n' | sort -un | grep -vx "$$" || true
}

start_cluster() {
    if [ -f "$STATE" ] && [ -n "$(cluster_pids)" ]; then
        echo "local_cluster.sh: a cluster is already running in $DIR (stop it first)" >&2; exit 1
    fi
    if [ ${#DIR} -gt 40 ]; then
        echo "local_cluster.sh: --dir $DIR is too long for Ray's unix sockets (keep it under 40 characters)" >&2
        exit 2
    fi
    mkdir -p "$DIR"
    umask 077
    "$PY" -c 'import secrets; print(secrets.token_hex(32))' > "$DIR/auth_token"
    chmod 600 "$DIR/auth_token"
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$DIR/auth_token"
    export MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY:-0}"  # Arrow gives freed memory back (docs/pipeline.md)
    export RAY_USAGE_STATS_ENABLED=0
    GCS_PORT="${GCS_PORT:-$(free_port)}"
    echo "$GCS_PORT" > "$DIR/gcs_port"
    DASH_PORT="${DASH_PORT:-$(free_port)}"
    local dashboard=(--include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT")
    if ! "$PY" -c 'import aiohttp_cors, opencensus' 2>/dev/null; then
        echo "local_cluster.sh: ray[default] is not installed (pip install -e '.[cluster]'):" \
             "starting without the dashboard, so Ray Jobs (ray job submit) are unavailable" >&2
        dashboard=(--include-dashboard false)
        DASH_PORT=""
    fi
    local head_res
    head_res=$(merge_json '{"head_node": 1, "node_head": 1}' "$HEAD_RESOURCES")
    echo "starting head node on 127.0.0.1:$GCS_PORT (cpus $HEAD_CPUS, resources $head_res)"
    ray_cli start --head --node-ip-address 127.0.0.1 --port "$GCS_PORT" "${dashboard[@]}" \
        --ray-client-server-port "$(free_port)" --dashboard-agent-listen-port "$(free_port)" \
        --metrics-export-port "$(free_port)" --num-cpus "$HEAD_CPUS" --num-gpus 0 \
        --resources "$head_res" --object-store-memory $((OBJECT_STORE_MB * 1024 * 1024)) \
        --temp-dir "$DIR/nh" --disable-usage-stats > "$DIR/head.log" 2>&1 \
        || { cat "$DIR/head.log" >&2; stop_cluster >&2; exit 1; }
    for i in $(seq 1 "$WORKERS"); do
        local res
        res=$(merge_json "{\"worker_node\": 1, \"node_w$i\": 1}" "$WORKER_RESOURCES")
        echo "starting worker node $i (cpus $WORKER_CPUS, resources $res)"
        ray_cli start --address "127.0.0.1:$GCS_PORT" --node-ip-address 127.0.0.1 \
            --dashboard-agent-listen-port "$(free_port)" --metrics-export-port "$(free_port)" \
            --num-cpus "$WORKER_CPUS" --num-gpus 0 --resources "$res" \
            --object-store-memory $((OBJECT_STORE_MB * 1024 * 1024)) \
            --temp-dir "$DIR/nw$i" --disable-usage-stats > "$DIR/worker$i.log" 2>&1 \
            || { cat "$DIR/worker$i.log" >&2; stop_cluster >&2; exit 1; }
    done
    {
        echo "export RAY_ADDRESS=127.0.0.1:$GCS_PORT"
        [ -n "$DASH_PORT" ] && echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASH_PORT"
        echo "export RAY_AUTH_MODE=token"
        echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
    } > "$STATE"
    # Wait until every node is registered with the GCS.
    local want=$((WORKERS + 1)) alive=0
    for _ in $(seq 1 60); do
        alive=$(RAY_ADDRESS="127.0.0.1:$GCS_PORT" "$PY" - <<'EOF' 2>/dev/null || echo 0
import ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
)
        [ "$alive" = "$want" ] && break
        sleep 1
    done
    if [ "$alive" != "$want" ]; then
        echo "local_cluster.sh: only $alive of $want nodes came up; see $DIR/*.log and $DIR/n*/session_latest/logs" >&2
        stop_cluster >&2
        exit 1
    fi
    echo "cluster up: $want nodes; GCS 127.0.0.1:$GCS_PORT${DASH_PORT:+, dashboard/jobs http://127.0.0.1:$DASH_PORT}"
    echo "clients: eval \"\$($0 env --dir $DIR)\""
}

alive() {  # the given PIDs that still run (not zombies)
    local p
    for p in "$@"; do
        if [ -d /proc/"$p" ] && ! grep -q '^State:.*Z' /proc/"$p"/status 2>/dev/null; then echo "$p"; fi
    done
    true
}

term_and_wait() {  # SIGTERM the given PIDs, wait up to 5 s for them to exit
    [ $# -eq 0 ] && return 0
    kill -TERM "$@" 2>/dev/null || true
    for _ in $(seq 1 20); do
        [ -z "$(alive "$@")" ] && return 0
        sleep 0.25
    done
}

stop_cluster() {
    local pids raylets gcs rest p cmdline
    pids=$(cluster_pids)
    if [ -z "$pids" ]; then echo "no processes of the cluster in $DIR"; rm -f "$STATE" "$DIR/gcs_port"; return 0; fi
    echo "stopping $(echo $pids | wc -w) processes of the cluster in $DIR"
    # Raylets first (they take their workers, agents and job drivers down with them while the
    # GCS still answers), then the head's other processes, the GCS last; SIGKILL what is left.
    raylets="" gcs=""
    for p in $pids; do
        cmdline=$( { tr '\0' ' ' < /proc/"$p"/cmdline; } 2>/dev/null || true)
        case "$cmdline" in
            */raylet/raylet\ *) raylets="$raylets $p" ;;
            */gcs/gcs_server\ *) gcs="$gcs $p" ;;
        esac
    done
    term_and_wait $raylets
    rest=$(for p in $(cluster_pids); do case " $gcs " in *" $p "*) ;; *) echo "$p" ;; esac; done)
    term_and_wait $rest
    term_and_wait $gcs
    pids=$(cluster_pids)
    if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
    rm -f "$STATE" "$DIR/gcs_port"
    echo "stopped"
}

case "$cmd" in
    start) start_cluster ;;
    stop) stop_cluster ;;
    env) [ -f "$STATE" ] || { echo "local_cluster.sh: no cluster in $DIR" >&2; exit 1; }; cat "$STATE" ;;
    status)
        [ -f "$STATE" ] || { echo "local_cluster.sh: no cluster in $DIR" >&2; exit 1; }
        # shellcheck disable=SC1090
        . "$STATE"; ray_cli status --address "$RAY_ADDRESS" ;;
    pids) cluster_pids ;;
    -h|--help|"") usage ;;
    *) echo "local_cluster.sh: unknown command $cmd" >&2; usage >&2; exit 2 ;;
esac
