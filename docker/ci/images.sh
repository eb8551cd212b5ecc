# shellcheck shell=bash
# The OCS images the deployment runs on: pulled when a registry serves them,
# otherwise built here as local stand-ins (docker/standins/) on a Debian base
# made from Debian packages. Either way they carry the real names, so
# docker/Dockerfile and docker/docker-compose.yml are used unchanged.
#
# Sourced by docker/ci-up.sh (needs DOCKER, DOCKER_HOST and ENGINE_DIR from
# engine.sh). Controlled by CI_UP_STANDINS: auto (default: build only what
# cannot be pulled), always (never pull), never (fail if a pull fails).

STANDIN_BASE=socs-tcp-ci/debian:bookworm
STANDIN_SUITE=bookworm
# image -> where it came from (pulled, present, stand-in), for the summary.
# shellcheck disable=SC2034  # read by ci-up.sh
declare -A IMAGE_SOURCE=()

# images_names DOCKER_DIR: set OCS_IMAGE and CROSSBAR_IMAGE from the
# Dockerfile and the compose file; fail if they are not one release.
images_names() {
    local dir=$1 tag
    tag=$(sed -nE 's/^ARG OCS_TAG=([^ ]+)$/\1/p' "$dir/Dockerfile")
    OCS_IMAGE=$(sed -nE 's/^FROM (simonsobs\/ocs):\$\{OCS_TAG\}$/\1/p' "$dir/Dockerfile"):$tag
    CROSSBAR_IMAGE=$(sed -nE 's/^ +image: (simonsobs\/ocs-crossbar:[^ ]+)$/\1/p' "$dir/docker-compose.yml")
    OCS_RELEASE=${tag#v}
    if [[ "$OCS_IMAGE" != "simonsobs/ocs:v"* || "$CROSSBAR_IMAGE" != "simonsobs/ocs-crossbar:$tag" ]]; then
        echo "cannot tell the OCS images apart: Dockerfile base '$OCS_IMAGE', compose crossbar '$CROSSBAR_IMAGE'" >&2
        return 1
    fi
}

# debian_mirror SUITE [APT_DIR]: the host's own Debian mirror for SUITE
# (deb822 .sources files first, then one-line .list entries; APT_DIR is
# /etc/apt unless given).
debian_mirror() {
    local suite=$1 apt=${2:-/etc/apt} file line uris='' suites=''
    _paragraph() {
        if [[ -n "$uris" && " $suites " == *" $suite "* ]]; then
            echo "$uris"
            return 0
        fi
        return 1
    }
    for file in "$apt"/sources.list.d/*.sources; do
        [[ -e "$file" ]] || continue
        uris='' suites=''
        while IFS= read -r line || [[ -n "$line" ]]; do
            case "$line" in
                URIs:*) read -r uris _ <<<"${line#URIs:}" ;;
                Suites:*) read -r suites <<<"${line#Suites:}" ;;
                '') _paragraph && return 0; uris='' suites='' ;;
            esac
        done <"$file"
        _paragraph && return 0
    done
    local listed
    listed=$(sed -nE "s/^deb +(\[[^]]*\] +)?([^ ]+) +$suite( .*)?$/\2/p" \
        "$apt/sources.list" "$apt"/sources.list.d/*.list 2>/dev/null || true)
    # Debian's own redirector when the host names none.
    echo "${listed%%$'\n'*}" | grep . || echo http://deb.debian.org/debian
}

# _try_pull IMAGE: pull within 90 s; quiet; the reason on failure goes to $ENGINE_DIR/pull-*.log.
_try_pull() {
    local log="$ENGINE_DIR/pull-${1//[\/:]/_}.log"
    timeout 90 "$DOCKER" pull -q "$1" >"$log" 2>&1
}

# _base_image: the Debian base, from debootstrap (minbase) and the host's mirror.
_base_image() {
    "$DOCKER" image inspect "$STANDIN_BASE" >/dev/null 2>&1 && return 0
    local rootfs="$ENGINE_DIR/rootfs" mirror t0=$SECONDS
    mirror=$(debian_mirror "$STANDIN_SUITE")
    echo "  base $STANDIN_BASE: debootstrap --variant=minbase $STANDIN_SUITE from $mirror"
    if ! debootstrap --variant=minbase "$STANDIN_SUITE" "$rootfs" "$mirror" >"$ENGINE_DIR/debootstrap.log" 2>&1; then
        echo "debootstrap failed; end of its log:" >&2
        tail -n 20 "$ENGINE_DIR/debootstrap.log" >&2
        return 1
    fi
    if ! tar -C "$rootfs" -c . | "$DOCKER" import -c 'CMD ["/bin/bash"]' - "$STANDIN_BASE" >/dev/null; then
        echo "docker import of the debootstrap'd $STANDIN_SUITE failed" >&2
        return 1
    fi
    rm -rf --one-file-system "$rootfs"
    echo "  base $STANDIN_BASE: done in $((SECONDS - t0)) s"
}

# _standin_context NAME: docker/standins/NAME plus the host's local CA
# certificates (certs/), in ENGINE_DIR/context-NAME.
_standin_context() {
    local ctx="$ENGINE_DIR/context-$1"
    if [[ ! -d "$ctx" ]]; then
        cp -r "$STANDINS_DIR/$1" "$ctx" && mkdir -p "$ctx/certs"
        # Debian's place for a site's extra CAs (update-ca-certificates reads it).
        find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$ctx/certs/" \; 2>/dev/null || true
    fi
    echo "$ctx"
}

# _docker_build NAME LOG ARGS...: docker build of the stand-in NAME's context; on
# failure, the end of LOG.
_docker_build() {
    local name=$1 log=$2 ctx
    shift 2
    ctx=$(_standin_context "$name")
    if ! "$DOCKER" build -q --build-arg "BASE=$STANDIN_BASE" --build-arg "OCS_VERSION=$OCS_RELEASE" \
        "$@" "$ctx" >"$log" 2>&1; then
        echo "docker build of docker/standins/$name $* failed; end of its log:" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
}

# _build_standins NAME=IMAGE...: the shared python-base stage once, then every
# stand-in side by side (their pip installs mostly wait on the network).
_build_standins() {
    local pair name image status=0 pid
    local -a pids=()
    name=${1%%=*}
    echo "  python-base stage (shared by the stand-ins; $(find "$(_standin_context "$name")/certs" -name '*.crt' | wc -l) host CA certificates)"
    local t0=$SECONDS
    _docker_build "$name" "$ENGINE_DIR/build-python-base.log" --target python-base -t socs-tcp-ci/python-base || return 1
    echo "  python-base stage: done in $((SECONDS - t0)) s"
    t0=$SECONDS
    for pair in "$@"; do
        name=${pair%%=*} image=${pair#*=}
        echo "  $image: stand-in from docker/standins/$name"
        { _docker_build "$name" "$ENGINE_DIR/build-$name.log" -t "$image" &&
            echo "  $image: done in $((SECONDS - t0)) s"; } &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    return "$status"
}

# _image_title IMAGE: what the image says it is (stand-ins say so in their title label).
_image_title() {
    local title
    title=$("$DOCKER" image inspect --format '{{index .Config.Labels "org.opencontainers.image.title"}}' "$1" 2>/dev/null)
    echo "${title:-$1}"
}

# images_ensure DOCKER_DIR: both OCS images present, pulled or stand-ins.
images_ensure() {
    local dir=$1 mode=${CI_UP_STANDINS:-auto} image pair
    local -a wanted=()    # NAME=IMAGE of the stand-ins to build
    STANDINS_DIR="$dir/standins"
    images_names "$dir" || return 1
    declare -A standin_for=(["$OCS_IMAGE"]=ocs ["$CROSSBAR_IMAGE"]=ocs-crossbar)
    for image in "$OCS_IMAGE" "$CROSSBAR_IMAGE"; do
        # Only an existing engine can have them already (a private one starts empty).
        if [[ "$mode" != always ]] && "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
            IMAGE_SOURCE[$image]="present: $(_image_title "$image")"
            echo "  $image: already present ($(_image_title "$image"))"
            continue
        fi
        if [[ "$mode" != always ]] && _try_pull "$image"; then
            IMAGE_SOURCE[$image]="pulled"
            echo "  $image: pulled"
            continue
        fi
        if [[ "$mode" == never ]]; then
            echo "cannot pull $image (CI_UP_STANDINS=never):" >&2
            cat "$ENGINE_DIR/pull-${image//[\/:]/_}.log" >&2
            return 1
        fi
        [[ "$mode" == always ]] || echo "  $image: cannot be pulled ($(tail -n 1 "$ENGINE_DIR/pull-${image//[\/:]/_}.log" | cut -c1-100))"
        wanted+=("${standin_for[$image]}=$image")
    done
    ((${#wanted[@]})) || return 0
    _base_image || return 1
    _build_standins "${wanted[@]}" || return 1
    for pair in "${wanted[@]}"; do
        # shellcheck disable=SC2034  # read by ci-up.sh
        IMAGE_SOURCE[${pair#*=}]="stand-in (docker/standins/${pair%%=*})"
    done
}
