#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Bring the docker compose deployment up for real and check it; then tear it
# down and leave the host as it was. Run by .ci/run after the test suite; a
# person runs `sudo make compose-check` (or `sudo bash docker/ci-up.sh`).
#
# From a fresh Debian machine, as root:
#   1. installs docker.io, docker-compose and debootstrap from Debian;
#   2. records the host's network state, starts a private dockerd (socket,
#      data root, exec root and pid file under one temp dir);
#   3. pulls the images the deployment is built on (simonsobs/ocs,
#      simonsobs/ocs-crossbar, simonsobs/socs: what its Dockerfiles and
#      compose files name), or builds local stand-ins (docker/standins/) on a
#      Debian base made with debootstrap when no registry serves them;
#   4. `compose up -d --build`, then checks: every service running, healthy
#      where it has a healthcheck; each agent's feeds reach a WAMP client on
#      the compose network and one on the host (published port); OCSClient on
#      the host sees each agent's acq running with fresh readings; each SOCS
#      agent launched by `socs-tcp agent` says in its log that it runs on
#      socs_tcp, each agent with SOCS_TCP=1 in its environment which SOCS
#      transports socs_tcp took over; a device stopped through its simulator's published control
#      port turns the agent's acq degraded, and starting it clears that; no
#      container restarted; `compose down` within DOWN_BOUND seconds;
#   5. always (also on failure or Ctrl-C): compose down, dockerd stopped by
#      its pid, its temp dir removed, host network state restored and
#      compared with the record.
# Exits non-zero with the reason, and the failing service's logs, on any failure.
#
# Environment:
#   CI_UP_COMPOSE_FILES  compose files, relative to the repository root,
#                        space-separated (default: DEFAULT_COMPOSE_FILES: the
#                        sample agents, and the SOCS agent layered on top).
#                        Every agent service in the merged config is checked.
#   CI_UP_ENGINE         private (default: as above, needs root) or existing:
#                        use the engine DOCKER_HOST (or the default socket)
#                        reaches; nothing is installed, started or restored,
#                        and images are only pulled (CI_UP_STANDINS=never).
#   CI_UP_STANDINS       auto (default) | always | never: see docker/ci/images.sh.
#   CI_UP_PYTHON         Python with ocs and PyYAML for the host-side checks
#                        (default: the repository's .venv, built by `make`).
set -euo pipefail

DOCKER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$DOCKER_DIR")
source "$DOCKER_DIR/ci/host-state.sh"
source "$DOCKER_DIR/ci/engine.sh"
source "$DOCKER_DIR/ci/images.sh"

# The whole deployment: .ci/run (through `make compose-check`) checks both, every time.
DEFAULT_COMPOSE_FILES="docker/docker-compose.yml docker/docker-compose.socs.yml"
read -ra COMPOSE_FILES <<<"${CI_UP_COMPOSE_FILES:-$DEFAULT_COMPOSE_FILES}"
ENGINE_MODE=${CI_UP_ENGINE:-private}
PYTHON=${CI_UP_PYTHON:-$ROOT/.venv/bin/python}
PROBE="$DOCKER_DIR/ci/probe.py"
# Its own project name: never touches a deployment a person runs from docker/.
PROJECT=socs-tcp-ci
# Bounds, in seconds. Generous: 2-core machines shared with other test runs.
HEALTH_TIMEOUT=240
PROBE_TIMEOUT=90
DOWN_BOUND=60

WORK=
COMPOSE=()
UP_DONE=
DOWN_DONE=
declare -a TIMINGS=()
declare -a AGENTS=()     # "service instance device control" per agent
declare -a PORTS=()      # "service host:port" per published port
declare -a BASES=()      # images to pull or stand in for
declare -a LAUNCHED=()   # "service instance how" per agent on socs_tcp (how: socs-tcp-agent | socs-tcp-env)
HUB=()                   # realm address_root host_url network_url image
T_STEP=0
T_START=$(date +%s.%N)

# -- output ---------------------------------------------------------------------

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# step NAME: start a timed step (the previous one ends).
step() {
    step_end
    STEP=$1
    T_STEP=$(now)
    echo "== $STEP"
}
step_end() {
    if [[ -n "${STEP:-}" ]]; then
        TIMINGS+=("$(printf '%-34s %7s s' "$STEP" "$(elapsed "$T_STEP")")")
        STEP=
    fi
}

# fail REASON [SERVICE...]: say why, show the services' logs, exit 1.
fail() {
    local reason=$1 service
    shift
    local where=${STEP:-setup}
    echo "ci-up: FAILED in step '$where': $reason" >&2
    if [[ -n "$UP_DONE" && -z "$DOWN_DONE" ]]; then
        echo "--- compose ps" >&2
        compose ps >&2 || true
        for service in "$@"; do
            echo "--- logs of $service (last 80 lines)" >&2
            compose logs --no-color --tail=80 "$service" >&2 || true
        done
    fi
    exit 1
}

# -- compose ----------------------------------------------------------------------

# compose ARGS...: the chosen compose on this project's files (COMPOSE is the
# whole command, so `timeout` can run it too).
compose() { "${COMPOSE[@]}" "$@"; }

# choose_compose: v2 (`docker compose`) where the plugin is there, else v1.
choose_compose() {
    local f version
    if "$DOCKER" compose version >/dev/null 2>&1; then
        COMPOSE=("$DOCKER" compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        fail "neither 'docker compose' (v2 plugin) nor 'docker-compose' (v1) is installed"
    fi
    version=$("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n 1)
    echo "  compose $version (${COMPOSE[*]}), files: ${COMPOSE_FILES[*]}"
    COMPOSE+=(-p "$PROJECT")
    for f in "${COMPOSE_FILES[@]}"; do COMPOSE+=(-f "$ROOT/$f"); done
}

# read_plan: what to check, from the merged compose config (docker/ci/probe.py plan).
read_plan() {
    local kind rest service instance device control
    compose config >"$WORK/compose.yml" || fail "compose config rejects ${COMPOSE_FILES[*]}"
    "$PYTHON" "$PROBE" plan "$WORK/compose.yml" >"$WORK/plan" || fail "cannot read the plan from the compose config"
    while read -r kind rest; do
        case "$kind" in
            port) PORTS+=("$rest") ;;
            base) BASES+=("$rest") ;;
            hub) read -ra HUB <<<"$rest" ;;
            agent) AGENTS+=("$rest") ;;
            launcher) LAUNCHED+=("$rest") ;;
        esac
    done <"$WORK/plan"
    local entry
    for entry in "${AGENTS[@]}"; do
        read -r service instance device control <<<"$entry"
        echo "  agent service $service: instance $instance, device $device, fault control $control"
    done
    for entry in "${LAUNCHED[@]}"; do
        read -r service instance how <<<"$entry"
        case "$how" in
            socs-tcp-agent) echo "  agent service $service $instance: launched by socs-tcp agent" ;;
            *) echo "  agent service $service $instance: SOCS_TCP set in its environment" ;;
        esac
    done
    echo "  images to pull or stand in for: ${BASES[*]}"
}

# ports_free: every published host port is free now (else `up` fails late and obscurely).
ports_free() {
    local entry service address
    for entry in "${PORTS[@]}"; do
        read -r service address <<<"$entry"
        if (exec 3<>"/dev/tcp/${address%:*}/${address##*:}") 2>/dev/null; then
            fail "$address (published by $service) is already in use on this host"
        fi
    done
}

# -- checks ---------------------------------------------------------------------------

# service_states: "service status health restarts" per container of the project.
service_states() {
    local id
    for id in $(compose ps -q); do
        "$DOCKER" inspect --format \
            '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.RestartCount}}' \
            "$id"
    done | sort
}

# wait_services: every service has a running container, healthy if it has a healthcheck.
wait_services() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT)) service status health restarts pending
    local -a services
    mapfile -t services < <(compose config --services | sort)
    while :; do
        pending=()
        service_states >"$WORK/states"
        for service in "${services[@]}"; do
            read -r _ status health restarts < <(grep "^$service " "$WORK/states" || echo "$service missing - 0")
            # A crash loop shows as "running" between restarts: fail on the first one.
            ((restarts == 0)) || fail "$service exited and was restarted ($restarts times)" "$service"
            if [[ "$status" != running || ("$health" != - && "$health" != healthy) ]]; then
                pending+=("$service($status/$health)")
            fi
        done
        ((${#pending[@]} == 0)) && break
        if ((SECONDS > deadline)); then
            fail "not running/healthy within ${HEALTH_TIMEOUT} s: ${pending[*]}" "${pending[@]%%(*}"
        fi
        sleep 2
    done
    sed 's/^/  /' "$WORK/states"
}

# no_restarts: a container that crashed and was restarted would pass every other check.
no_restarts() {
    local service status health restarts
    service_states >"$WORK/states"
    while read -r service status health restarts; do
        if [[ "$status" != running || "$restarts" != 0 ]]; then
            fail "$service is $status after $restarts restarts" "$service"
        fi
    done <"$WORK/states"
    echo "  all $(wc -l <"$WORK/states") containers still running, 0 restarts"
}

agent_field() { # agent_field N: the Nth field (1-based) of every agent line
    local a
    for a in "${AGENTS[@]}"; do echo "$a" | cut -d' ' -f"$1"; done
}

instance_args() {
    local i
    for i in $(agent_field 2); do printf -- '--instance %s ' "$i"; done
}

# feeds_on_network: a WAMP client in a container on the compose network.
feeds_on_network() {
    local network
    network=$("$DOCKER" network ls -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter label=com.docker.compose.network=default --format '{{.Name}}')
    [[ -n "$network" ]] || fail "no default network for project $PROJECT"
    # shellcheck disable=SC2046
    "$DOCKER" run --rm --network "$network" -v "$PROBE:/probe.py:ro" --entrypoint python3 "${HUB[4]}" \
        /probe.py feeds --router "${HUB[3]}" --realm "${HUB[0]}" --address-root "${HUB[1]}" \
        --timeout "$PROBE_TIMEOUT" $(instance_args) ||
        fail "feeds not seen on the compose network ($network)" crossbar $(agent_field 1)
}

# feeds_on_host: the same through crossbar's published 127.0.0.1 port.
feeds_on_host() {
    # shellcheck disable=SC2046
    "$PYTHON" "$PROBE" feeds --router "${HUB[2]}" --realm "${HUB[0]}" --address-root "${HUB[1]}" \
        --timeout "$PROBE_TIMEOUT" $(instance_args) ||
        fail "feeds not seen from the host through ${HUB[2]}" crossbar $(agent_field 1)
}

# acq_on_host: OCSClient with the deployment's site config (its hub is the published port).
acq_on_host() {
    # shellcheck disable=SC2046
    OCS_CONFIG_DIR="$DOCKER_DIR/config" "$PYTHON" "$PROBE" acq --timeout "$PROBE_TIMEOUT" $(instance_args) ||
        fail "OCSClient on the host does not see healthy acq sessions" crossbar $(agent_field 1)
}

# TCP_BASE: the line `socs-tcp agent` logs once the agent's reactor runs
# (socs_tcp.compat.describe()) when socs.tcp.TCPInterface is socs_tcp's.
TCP_BASE='TCP base: socs_tcp [^ ]+ \(socs\.tcp\.TCPInterface is socs_tcp\.TCPInterface( with SOCS_TCP_REDIRECT)?; socs [0-9][^)]*\)'

# TAKEN_OVER: the line an agent with SOCS_TCP set logs once its reactor runs:
# the SOCS transports now on socs_tcp (none yet: the switch did not act).
TAKEN_OVER='SOCS_TCP: on socs_tcp: [a-z_]+ \('

# on_socs_tcp: every agent launched by `socs-tcp agent` (an unchanged SOCS
# agent) says in its log that socs.tcp.TCPInterface is socs_tcp's; any other
# "TCP base:" line (socs missing, not switched) fails. Every agent started
# with SOCS_TCP in its environment (by SOCS's own entrypoint) says which of
# its transports socs_tcp took over.
on_socs_tcp() {
    local entry service instance how line
    if ((${#LAUNCHED[@]} == 0)); then
        echo "  no agent runs on socs_tcp here"
        return 0
    fi
    for entry in "${LAUNCHED[@]}"; do
        read -r service instance how <<<"$entry"
        if [[ "$how" == socs-tcp-env ]]; then
            line=$(compose logs --no-color "$service" 2>&1 | grep -oE 'SOCS_TCP: on socs_tcp: .*' | head -n 1 || true)
            [[ -n "$line" ]] || fail "$service ($instance) has SOCS_TCP set but never logged the transports taken over" "$service"
            grep -qE "^$TAKEN_OVER" <<<"$line" ||
                fail "$service ($instance): SOCS_TCP took nothing over: '$line'" "$service"
            echo "  $service ($instance): $line"
            continue
        fi
        line=$(compose logs --no-color "$service" 2>&1 | grep -oE 'TCP base: .*' | head -n 1 || true)
        [[ -n "$line" ]] || fail "$service ($instance) never logged its 'TCP base:' line" "$service"
        grep -qE "^$TCP_BASE\$" <<<"$line" ||
            fail "$service ($instance) does not run on socs_tcp: '$line'" "$service"
        echo "  $service ($instance): $line"
    done
}

# faults: every agent whose device simulator publishes a control port rides out an outage.
faults() {
    local entry service instance device control tried=0
    for entry in "${AGENTS[@]}"; do
        read -r service instance device control <<<"$entry"
        if [[ "$control" == - ]]; then
            echo "  $instance: its device ($device) has no published fault-control port; not faulted"
            continue
        fi
        OCS_CONFIG_DIR="$DOCKER_DIR/config" "$PYTHON" "$PROBE" fault --instance "$instance" \
            --control "$control" --timeout "$PROBE_TIMEOUT" ||
            fail "$instance did not go degraded and recover when $device stopped and started" "$service" "$device"
        tried=$((tried + 1))
    done
    ((tried > 0)) || fail "no agent's device has a fault-control port: the outage check did not run"
}

# down_bounded: `compose down` ends within DOWN_BOUND seconds and leaves nothing.
down_bounded() {
    local t0 took left
    t0=$(now)
    if ! timeout "$DOWN_BOUND" "${COMPOSE[@]}" down --remove-orphans >"$WORK/down.log" 2>&1; then
        cat "$WORK/down.log" >&2
        fail "compose down did not finish within ${DOWN_BOUND} s"
    fi
    DOWN_DONE=1
    took=$(elapsed "$t0")
    left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
    ((left == 0)) || fail "$left containers of $PROJECT remain after down"
    left=$("$DOCKER" network ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
    ((left == 0)) || fail "$left networks of $PROJECT remain after down"
    echo "  down in $took s (bound ${DOWN_BOUND} s); no container or network left"
}

# -- setup and teardown -------------------------------------------------------------------

preconditions() {
    [[ -x "$PYTHON" ]] || fail "no Python at $PYTHON for the host-side checks: run 'make .venv/.installed' or set CI_UP_PYTHON"
    "$PYTHON" -c 'import ocs, yaml, autobahn' 2>/dev/null ||
        fail "$PYTHON lacks ocs/PyYAML/autobahn (the repository's .venv has them: make .venv/.installed)"
    case "$ENGINE_MODE" in
        private)
            [[ $EUID -eq 0 ]] || fail "a private dockerd needs root: run as root (sudo make compose-check), or CI_UP_ENGINE=existing"
            ;;
        existing)
            CI_UP_STANDINS=${CI_UP_STANDINS:-never}
            ;;
        *) fail "CI_UP_ENGINE must be 'private' or 'existing', not '$ENGINE_MODE'" ;;
    esac
}

cleanup() {
    local status=$?
    set +e
    step_end
    if [[ -n "$UP_DONE" && -z "$DOWN_DONE" ]]; then
        echo "== cleanup: compose down"
        timeout 120 "${COMPOSE[@]}" down --remove-orphans -t 5 >/dev/null 2>&1 ||
            echo "cleanup: compose down failed" >&2
    fi
    if [[ "$ENGINE_MODE" == private && -n "$WORK" ]]; then
        echo "== cleanup: stop dockerd, restore the host"
        engine_stop
        host_state_restore "$WORK/host"
        if ! host_state_verify "$WORK/host" && ((status == 0)); then status=1; fi
    fi
    [[ -n "$WORK" ]] && rm -rf --one-file-system "$WORK"
    echo
    local image
    for image in "${!IMAGE_SOURCE[@]}"; do echo "image $image: ${IMAGE_SOURCE[$image]}"; done
    echo "timings:"
    printf '  %s\n' "${TIMINGS[@]}"
    printf '  %-34s %7s s\n' total "$(elapsed "$T_START")"
    if ((status == 0)); then echo "ci-up: PASS"; else echo "ci-up: FAIL (exit $status)" >&2; fi
    exit "$status"
}

main() {
    cd "$ROOT"
    preconditions
    trap cleanup EXIT
    trap 'echo "ci-up: interrupted" >&2; exit 130' INT TERM
    WORK=$(mktemp -d /tmp/socs-tcp-ci.XXXXXX)

    if [[ "$ENGINE_MODE" == private ]]; then
        step "install engine packages"
        engine_install || fail "cannot install ${ENGINE_PACKAGES[*]} from Debian (apt-get failed; see above)"
        host_state_record "$WORK/host"
        step "start private dockerd"
        engine_start "$WORK/engine" || fail "the private dockerd did not start (see its log above)"
    else
        step "existing engine"
        "$DOCKER" info >/dev/null 2>&1 || fail "no Docker engine reachable (DOCKER_HOST=${DOCKER_HOST:-unset})"
        # shellcheck disable=SC2034  # images.sh keeps its pull logs there
        ENGINE_DIR=$WORK
    fi
    echo "  $(engine_describe)"
    choose_compose
    read_plan
    ports_free

    step "images (pull or stand-ins)"
    images_ensure "$DOCKER_DIR" "${BASES[@]}" || fail "the images the deployment is built on are neither pullable nor buildable here"

    step "compose up -d --build"
    UP_DONE=1
    if ! compose up -d --build >"$WORK/up.log" 2>&1; then
        tail -n 40 "$WORK/up.log" >&2
        local -a services
        mapfile -t services < <(compose config --services)
        fail "compose up failed" "${services[@]}"
    fi
    step "services running/healthy"
    wait_services
    step "feeds on the compose network"
    feeds_on_network
    step "feeds on the host (published port)"
    feeds_on_host
    step "OCSClient on the host: acq"
    acq_on_host
    step "SOCS agents on socs_tcp"
    on_socs_tcp
    step "fault via control port, recovery"
    faults
    step "no restarts"
    no_restarts
    step "compose down"
    down_bounded
    step_end
}

main "$@"
