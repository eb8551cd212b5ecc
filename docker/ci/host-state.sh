# shellcheck shell=bash
# Record and restore the host network state a private dockerd changes.
#
# dockerd turns IP forwarding on, may set the iptables FORWARD policy to DROP,
# adds DOCKER* chains and the rules that jump to them, and leaves its docker0
# bridge behind when it exits. Later work on this machine (tests that build
# veth pairs and network namespaces, for one) must find the host as it was, so
# ci-up.sh records the state before dockerd starts and puts it back after.
#
# Only what dockerd adds is removed: rules and links that mention docker
# (DOCKER*, docker0, br-<id>, veth*) and were not there before. Anything
# another process adds meanwhile is left alone.
#
# Sourced by docker/ci-up.sh; every function takes the state directory.

# The kernel settings dockerd may write. Missing ones (no IPv6, no bridge
# netfilter) are skipped.
HOST_SYSCTLS=(
    net.ipv4.ip_forward
    net.ipv6.conf.all.forwarding
    net.ipv6.conf.default.forwarding
    net.bridge.bridge-nf-call-iptables
    net.bridge.bridge-nf-call-ip6tables
)
HOST_IPTABLES_TABLES=(filter nat)
# What marks a rule, chain or link as dockerd's.
HOST_DOCKER_PATTERN='DOCKER|docker0|br-[0-9a-f]{12}|veth'

# _iptables_tools: the iptables front ends present (ip6tables only if it works).
_iptables_tools() {
    local tool
    for tool in iptables ip6tables; do
        if command -v "$tool" >/dev/null 2>&1 && "$tool" -S >/dev/null 2>&1; then
            echo "$tool"
        fi
    done
}

# _iptables_snapshot TOOL TABLE: the table's chains and rules, without
# counters or comments, so two snapshots compare equal when nothing changed.
_iptables_snapshot() {
    "$1-save" -t "$2" 2>/dev/null | grep -v '^#' | sed -E 's/ \[[0-9]+:[0-9]+\]$//' || true
}

# _new_docker_lines BEFORE: lines of stdin that look like dockerd's and are not in BEFORE.
_new_docker_lines() {
    { grep -E -- "$HOST_DOCKER_PATTERN" | grep -vxF -f "$1"; } || true
}

# _links: interface names, one a line.
_links() {
    ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort
}

# host_state_snapshot DIR: write the current state into DIR (one file each).
host_state_snapshot() {
    local dir=$1 key tool table
    mkdir -p "$dir"
    : >"$dir/sysctl"
    for key in "${HOST_SYSCTLS[@]}"; do
        if sysctl -n "$key" >/dev/null 2>&1; then
            echo "$key=$(sysctl -n "$key")" >>"$dir/sysctl"
        fi
    done
    for tool in $(_iptables_tools); do
        for table in "${HOST_IPTABLES_TABLES[@]}"; do
            _iptables_snapshot "$tool" "$table" >"$dir/$tool-$table"
        done
    done
    _links >"$dir/links"
}

# host_state_record DIR: the state before dockerd, in DIR/before.
host_state_record() {
    local dir=$1 tool table
    # iptables-nft creates a table on first listing; list them once now so
    # that a table dockerd creates does not show up as a difference later.
    for tool in $(_iptables_tools); do
        for table in "${HOST_IPTABLES_TABLES[@]}"; do
            "$tool" -t "$table" -S >/dev/null 2>&1 || true
        done
    done
    host_state_snapshot "$dir/before"
}

# _restore_sysctls DIR: write back every recorded value that changed.
_restore_sysctls() {
    local dir=$1 key value
    while IFS='=' read -r key value; do
        if [[ "$(sysctl -n "$key" 2>/dev/null)" != "$value" ]]; then
            sysctl -q -w "$key=$value" || echo "host-state: cannot restore $key=$value" >&2
        fi
    done <"$dir/before/sysctl"
}

# _restore_iptables TOOL TABLE DIR: delete dockerd's new rules, then its new
# chains, then put back the built-in chains' policies.
_restore_iptables() {
    local tool=$1 table=$2 dir=$3 before=$3/before/$1-$2 rule chain policy
    local -a words
    [[ -f "$before" ]] || return 0
    # Rules in existing chains that jump to or match docker's (e.g. FORWARD -j DOCKER-USER).
    _iptables_snapshot "$tool" "$table" | { grep -E '^-A ' || true; } | _new_docker_lines "$before" \
        | while read -r rule; do
            read -ra words <<<"${rule#-A }"
            chain=${words[0]}
            [[ "$chain" =~ ^DOCKER ]] && continue   # goes with its chain below
            "$tool" -t "$table" -D "${words[@]}" || echo "host-state: cannot delete '$rule'" >&2
        done
    # Chains docker created: flush all first (they jump to each other), then delete.
    local -a chains
    mapfile -t chains < <(_iptables_snapshot "$tool" "$table" | sed -nE 's/^:(DOCKER[^ ]*) .*/\1/p' \
        | _new_docker_lines <(sed -nE 's/^:([^ ]+) .*/\1/p' "$before"))
    for chain in "${chains[@]}"; do "$tool" -t "$table" -F "$chain"; done
    for chain in "${chains[@]}"; do "$tool" -t "$table" -X "$chain"; done
    # Built-in chains keep a policy ("-" marks a user chain).
    sed -nE 's/^:([A-Z]+) ([A-Z]+)$/\1 \2/p' "$before" | while read -r chain policy; do
        "$tool" -t "$table" -P "$chain" "$policy"
    done
}

# _restore_links DIR: delete the bridges and veths dockerd left behind.
_restore_links() {
    local dir=$1 link
    _links | _new_docker_lines "$dir/before/links" | { grep -E "^($HOST_DOCKER_PATTERN)" || true; } \
        | while read -r link; do
            ip link delete "$link" || echo "host-state: cannot delete link $link" >&2
        done
}

# host_state_restore DIR: undo what dockerd changed (call after it stopped).
host_state_restore() {
    local dir=$1 tool table
    [[ -d "$dir/before" ]] || return 0
    _restore_sysctls "$dir"
    for tool in $(_iptables_tools); do
        for table in "${HOST_IPTABLES_TABLES[@]}"; do
            _restore_iptables "$tool" "$table" "$dir"
        done
    done
    _restore_links "$dir"
}

# host_state_verify DIR: compare with the record; print before/after and any
# difference; return 1 if the host is not as it was.
host_state_verify() {
    local dir=$1 file status=0
    host_state_snapshot "$dir/after"
    echo "host state before -> after:"
    echo "  $(paste -sd' ' "$dir/before/sysctl")"
    echo "  $(paste -sd' ' "$dir/after/sysctl")"
    echo "  links: $(paste -sd' ' "$dir/before/links") -> $(paste -sd' ' "$dir/after/links")"
    for file in "$dir"/before/ip*tables-*; do
        [[ -e "$file" ]] || continue
        local name=${file##*/}
        echo "  $name: $(grep -c "^-A" "$file" || true) rules, $(grep -c "^:" "$file" || true) chains ->" \
            "$(grep -c '^-A' "$dir/after/$name" || true) rules, $(grep -c '^:' "$dir/after/$name" || true) chains;" \
            "policies: $(sed -nE 's/^:([A-Z]+) ([A-Z]+)$/\1=\2/p' "$dir/after/$name" | paste -sd' ')"
    done
    if ! diff -r "$dir/before" "$dir/after" >"$dir/diff"; then
        echo "host-state: the host is NOT as it was before dockerd started:" >&2
        cat "$dir/diff" >&2
        status=1
    else
        echo "  host restored: identical to the record"
    fi
    return "$status"
}
