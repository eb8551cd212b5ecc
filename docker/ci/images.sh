# shellcheck shell=bash
# The images the deployment runs on: pulled when a registry serves them,
# otherwise built here as local stand-ins (docker/standins/) on a Debian base
# made from Debian packages. Either way they carry the real names, so the
# deployment's Dockerfiles and compose files are used unchanged.
#
# Which images: the `base` lines of `docker/ci/probe.py plan` (each FROM of
# the deployment's Dockerfiles, each image of a service that is not built),
# passed to images_ensure by ci-up.sh. A stand-in exists for the OCS images
# (simonsobs/ocs, simonsobs/ocs-crossbar) and for SOCS's (simonsobs/socs);
# any other base must be pullable.
#
# Sourced by docker/ci-up.sh (needs DOCKER, DOCKER_HOST and ENGINE_DIR from
# engine.sh). Controlled by CI_UP_STANDINS: auto (default: build only what
# cannot be pulled), always (never pull), never (fail if a pull fails).

STANDIN_BASE=socs-tcp-ci/debian:bookworm
STANDIN_SUITE=bookworm
# image repository -> its stand-in, docker/standins/NAME.
declare -A STANDIN_FOR=([simonsobs/ocs]=ocs [simonsobs/ocs-crossbar]=ocs-crossbar [simonsobs/socs]=socs)
# stand-in -> the stand-in whose image it is built FROM (built after it, in one job).
declare -A STANDIN_AFTER=([socs]=ocs)
# image -> where it came from (pulled, present, stand-in), for the summary.
# shellcheck disable=SC2034  # read by ci-up.sh
declare -A IMAGE_SOURCE=()

# _repo IMAGE / _tag IMAGE: an image reference's repository and tag ("" if untagged).
_repo() { if [[ "${1##*/}" == *:* ]]; then echo "${1%:*}"; else echo "$1"; fi; }
_tag() { if [[ "${1##*/}" == *:* ]]; then echo "${1##*:}"; fi; }

# images_releases IMAGE...: set OCS_RELEASE and SOCS_RELEASE (versions without
# the v; empty when no such image is named) from the images' tags; fail if the
# OCS images are not one release (the agents' ocs must match crossbar's config).
images_releases() {
    local image tag
    OCS_RELEASE='' SOCS_RELEASE=''
    for image in "$@"; do
        tag=$(_tag "$image")
        case "$(_repo "$image")" in
            simonsobs/ocs | simonsobs/ocs-crossbar)
                if [[ -n "$OCS_RELEASE" && "$OCS_RELEASE" != "${tag#v}" ]]; then
                    echo "the OCS images are not one release: ${*}" >&2
                    return 1
                fi
                OCS_RELEASE=${tag#v}
                ;;
            simonsobs/socs) SOCS_RELEASE=${tag#v} ;;
        esac
    done
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

# _docker_build NAME LOG ARGS...: docker build of the stand-in NAME's context,
# with the build args it takes; on failure, the end of LOG.
_docker_build() {
    local name=$1 log=$2 ctx
    shift 2
    local -a build_args=(--build-arg "OCS_VERSION=$OCS_RELEASE")
    case "$name" in
        socs) build_args+=(--build-arg "SOCS_VERSION=$SOCS_RELEASE") ;;
        *) build_args+=(--build-arg "BASE=$STANDIN_BASE") ;;
    esac
    ctx=$(_standin_context "$name")
    if ! "$DOCKER" build -q "${build_args[@]}" "$@" "$ctx" >"$log" 2>&1; then
        echo "docker build of docker/standins/$name $* failed; end of its log:" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
}

# _build_one NAME IMAGE T0: build the stand-in NAME as IMAGE; say how long it
# took, and since T0 (the start of all the stand-ins) when it waited for another.
_build_one() {
    local name=$1 image=$2 t0=$3 started=$SECONDS since=''
    echo "  $image: stand-in from docker/standins/$name"
    _docker_build "$name" "$ENGINE_DIR/build-$name.log" -t "$image" || return 1
    ((started == t0)) || since=", $((SECONDS - t0)) s since the stand-ins began"
    echo "  $image: done in $((SECONDS - started)) s$since"
}

# _build_standins NAME=IMAGE...: the shared python-base stage once (when the ocs
# or ocs-crossbar stand-in is wanted), then every stand-in side by side (their
# pip installs mostly wait on the network); one built FROM another
# (STANDIN_AFTER) follows it in the same job.
_build_standins() {
    local pair name after status=0 pid t0 first=''
    local -a pids=()
    local -A image_of=()
    for pair in "$@"; do image_of[${pair%%=*}]=${pair#*=}; done
    for name in ocs ocs-crossbar; do
        if [[ -n "${image_of[$name]:-}" ]]; then first=$name; break; fi
    done
    if [[ -n "$first" ]]; then
        echo "  python-base stage (shared by the stand-ins; $(find "$(_standin_context "$first")/certs" -name '*.crt' | wc -l) host CA certificates)"
        t0=$SECONDS
        _docker_build "$first" "$ENGINE_DIR/build-python-base.log" --target python-base -t socs-tcp-ci/python-base || return 1
        echo "  python-base stage: done in $((SECONDS - t0)) s"
    fi
    t0=$SECONDS
    for name in "${!image_of[@]}"; do
        after=${STANDIN_AFTER[$name]:-}
        [[ -n "$after" && -n "${image_of[$after]:-}" ]] && continue   # built in $after's job
        {
            _build_one "$name" "${image_of[$name]}" "$t0" || exit 1
            local next
            for next in "${!image_of[@]}"; do
                if [[ "${STANDIN_AFTER[$next]:-}" == "$name" ]]; then
                    _build_one "$next" "${image_of[$next]}" "$t0" || exit 1
                fi
            done
        } &
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

# _names_standin NAME IMAGE...: one of the IMAGEs is the one stand-in NAME stands in for.
_names_standin() {
    local name=$1 image
    shift
    for image in "$@"; do
        [[ "${STANDIN_FOR[$(_repo "$image")]:-}" == "$name" ]] && return 0
    done
    return 1
}

# images_ensure DOCKER_DIR IMAGE...: every IMAGE present, pulled or a stand-in.
images_ensure() {
    local dir=$1 mode=${CI_UP_STANDINS:-auto} image pair name after why
    shift
    local -a wanted=()    # NAME=IMAGE of the stand-ins to build
    STANDINS_DIR="$dir/standins"
    (($#)) || { echo "no images named (the plan has no base lines)" >&2; return 1; }
    images_releases "$@" || return 1
    for image in "$@"; do
        # Only an existing engine can have them already (a private one starts empty).
        if [[ "$mode" != always ]] && "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
            IMAGE_SOURCE[$image]="present: $(_image_title "$image")"
            echo "  $image: already present ($(_image_title "$image"))"
            continue
        fi
        name=${STANDIN_FOR[$(_repo "$image")]:-}
        # `always` builds every stand-in there is; an image without one is pulled anyway.
        if [[ "$mode" != always || -z "$name" ]] && _try_pull "$image"; then
            IMAGE_SOURCE[$image]="pulled"
            echo "  $image: pulled"
            continue
        fi
        if [[ "$mode" == never || -z "$name" ]]; then
            if [[ -n "$name" ]]; then why="CI_UP_STANDINS=never"; else why="there is no stand-in for it"; fi
            echo "cannot pull $image ($why):" >&2
            cat "$ENGINE_DIR/pull-${image//[\/:]/_}.log" >&2 2>/dev/null || true
            return 1
        fi
        [[ "$mode" == always ]] || echo "  $image: cannot be pulled ($(tail -n 1 "$ENGINE_DIR/pull-${image//[\/:]/_}.log" | cut -c1-100))"
        wanted+=("$name=$image")
    done
    ((${#wanted[@]})) || return 0
    # A stand-in built FROM another image (socs FROM simonsobs/ocs) needs that
    # image among these: ensured above, pulled or built first.
    local debian=''
    for pair in "${wanted[@]}"; do
        name=${pair%%=*}
        after=${STANDIN_AFTER[$name]:-}
        if [[ -n "$after" ]] && ! _names_standin "$after" "$@"; then
            echo "the $name stand-in is built FROM the image of the $after stand-in, which is not among: $*" >&2
            return 1
        fi
        [[ -n "$after" ]] || debian=1
    done
    # Only the stand-ins of OCS's own images start from Debian.
    if [[ -n "$debian" ]]; then _base_image || return 1; fi
    _build_standins "${wanted[@]}" || return 1
    for pair in "${wanted[@]}"; do
        # shellcheck disable=SC2034  # read by ci-up.sh
        IMAGE_SOURCE[${pair#*=}]="stand-in (docker/standins/${pair%%=*})"
    done
}
