# shellcheck shell=bash
# A private Docker engine for docker/ci-up.sh: installed from Debian packages,
# started by hand with its own socket, data root, exec root and pid file under
# one temp dir, stopped by its pid. Nothing of it outlives the run.
#
# Why private: CI machines have no system dockerd (and no systemd to start
# one), and on a person's machine the check must not touch their engine, its
# images or its networks.
#
# Sourced by docker/ci-up.sh. Sets ENGINE_DIR, ENGINE_PID, DOCKER (the client
# that matches the engine) and exports DOCKER_HOST / DOCKER_CONFIG.

# shellcheck disable=SC2034  # ci-up.sh and .ci/run name them in messages
ENGINE_PACKAGES=(docker.io docker-compose debootstrap)
ENGINE_PID=
ENGINE_DIR=
# Paths dockerd writes outside its data and exec roots, whatever its flags
# (20.10: its trust key, and the plugin socket dir). Those that do not exist
# before it starts are removed after it stops.
ENGINE_HOST_PATHS=(/etc/docker/key.json /run/docker)
ENGINE_MADE=()
# The Debian package's client speaks the engine's API version; another client
# earlier on PATH (e.g. a newer static one) may want a newer API or buildx.
DOCKER=docker

# _apt_install PKG...: one attempt, quiet unless it fails.
_apt_install() {
    local log
    log=$(mktemp)
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    tail -n 20 "$log" >&2
    rm -f "$log"
    return 1
}

# engine_install: install what is missing of docker.io, docker-compose and
# debootstrap. Returns 1 (with apt's reason) if they cannot be installed.
engine_install() {
    local -a missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if ((${#missing[@]})); then
        # Without a policy-rc.d, docker.io's postinst would start a system
        # dockerd through its init script; keep it from doing so.
        local policy=/usr/sbin/policy-rc.d made_policy=
        if [[ ! -e "$policy" ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
        fi
        local ok=1
        _apt_install "${missing[@]}" || { sleep 5; _apt_install "${missing[@]}"; } || ok=
        [[ -n "$made_policy" ]] && rm -f "$policy"
        [[ -n "$ok" ]] || return 1
    fi
    if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; fi
    "$DOCKER" --version >/dev/null
}

# engine_start DIR: start dockerd with all its state under DIR; wait until it
# answers. Returns 1 with the end of its log if it does not start.
engine_start() {
    ENGINE_DIR=$1
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec" "$ENGINE_DIR/client"
    # An empty config file: a site's /etc/docker/daemon.json must not change this run.
    echo '{}' >"$ENGINE_DIR/daemon.json"
    export DOCKER_HOST="unix://$ENGINE_DIR/docker.sock"
    # The client writes its own config (auth, contexts) here, not in ~/.docker.
    export DOCKER_CONFIG="$ENGINE_DIR/client"
    local path
    ENGINE_MADE=()
    for path in "${ENGINE_HOST_PATHS[@]}"; do
        [[ -e "$path" ]] || ENGINE_MADE+=("$path")
    done
    dockerd --host "$DOCKER_HOST" --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$ENGINE_DIR/dockerd.pid" --config-file "$ENGINE_DIR/daemon.json" \
        >"$ENGINE_DIR/dockerd.log" 2>&1 &
    ENGINE_PID=$!
    local deadline=$((SECONDS + 60))
    until "$DOCKER" info >/dev/null 2>&1; do
        if ! kill -0 "$ENGINE_PID" 2>/dev/null || ((SECONDS > deadline)); then
            echo "dockerd did not start (pid $ENGINE_PID); end of $ENGINE_DIR/dockerd.log:" >&2
            tail -n 30 "$ENGINE_DIR/dockerd.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

# engine_describe: one line on the engine and its storage (for the log).
engine_describe() {
    "$DOCKER" info --format 'engine {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupVersion}}, pid '"$ENGINE_PID"
}

# _pids_using DIR: processes whose command line names DIR (containerd and
# its shims run with paths under the exec root).
_pids_using() {
    local proc pid
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        if tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -qF -- "$1"; then
            echo "$pid"
        fi
    done
}

# engine_stop: stop dockerd by its pid (SIGTERM, then SIGKILL after 30 s),
# then any process it left, unmount what is left under ENGINE_DIR and remove it.
engine_stop() {
    if [[ -n "$ENGINE_PID" ]] && kill -0 "$ENGINE_PID" 2>/dev/null; then
        kill -TERM "$ENGINE_PID"
        local deadline=$((SECONDS + 30))
        while kill -0 "$ENGINE_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        if kill -0 "$ENGINE_PID" 2>/dev/null; then
            echo "dockerd (pid $ENGINE_PID) ignored SIGTERM for 30 s: SIGKILL" >&2
            kill -KILL "$ENGINE_PID" 2>/dev/null || true
        fi
        wait "$ENGINE_PID" 2>/dev/null || true
    fi
    ENGINE_PID=
    local made
    for made in "${ENGINE_MADE[@]}"; do
        rm -rf --one-file-system "$made"
    done
    ENGINE_MADE=()
    [[ -n "$ENGINE_DIR" && -d "$ENGINE_DIR" ]] || return 0
    local pid
    for pid in $(_pids_using "$ENGINE_DIR"); do
        echo "left behind by dockerd: pid $pid ($(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-80)): SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    done
    local mnt
    # Deepest first; overlay and shm mounts of containers that did not stop cleanly.
    findmnt -rn -o TARGET | { grep -F -- "$ENGINE_DIR" || true; } | sort -r | while read -r mnt; do
        umount -l "$mnt" || echo "cannot unmount $mnt" >&2
    done
    rm -rf --one-file-system "$ENGINE_DIR"
    ENGINE_DIR=
}
