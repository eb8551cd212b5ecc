#!/usr/bin/env bash
# SOCS's own tests for the agents socs_tcp takes over, run twice: on plain
# socs, then with SOCS_TCP=1 (every SOCS TCP transport on socs_tcp).
#
#   tests/socs_suite/run.sh SOCS_TESTS_DIR [OUT_DIR]
#
# SOCS_TESTS_DIR is the tests/ directory of a simonsobs/socs checkout of the
# installed socs version (the socs sdist on PyPI holds no tests/: CI, which
# reaches PyPI only, cannot fetch them; run this where GitHub is reachable,
# e.g. `git clone https://github.com/simonsobs/socs` and pass socs/tests).
# Test files are read from there unchanged and never copied into this repo.
#
# SOCS's tests use fixed ports (crossbar 18001, the Prologix emulator 1234,
# ...): each run is in a private network namespace (`unshare -n`, as root),
# so nothing else on the machine sees or collides with them. crossbar comes
# from PyPI (tests/socs_suite/socs_suite_plugin.py stands in for the
# docker compose service SOCS's CI starts). Needs root, iproute2, and in the
# venv: socs, crossbar, coverage, pfeiffer-vacuum-protocol (make's .venv has them).
#
# SOCS's CI has neither pytest-twisted nor socs_tcp's pytest plugin; both are
# off here too (pytest-twisted would run every test in the reactor thread).
#
# Prints the pytest summary of each run and the agent log lines that name
# the transports socs_tcp took over (the proof that the second run used it);
# exits non-zero if a test passes on plain socs and fails with SOCS_TCP=1,
# or if no agent of the SOCS_TCP=1 run logged the takeover.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tests_src="${1:?usage: $0 SOCS_TESTS_DIR [OUT_DIR]}"
out="${2:-$(mktemp -d -t socs-suite-XXXXXX)}"
venv_bin="${SOCS_SUITE_VENV_BIN:-$repo/.venv/bin}"
python="$venv_bin/python"

FILES=(
    integration/test_scpi_psu_agent_integration.py
    integration/test_pfeiffer_tc400_agent_integration.py
    agents/hwp_pid/test_pid_controller.py
    integration/test_hwp_pid_agent_integration.py
    integration/test_hwp_supervisor_agent_integration.py
)
# SOCS's moxa_serial and pmx tests (deleted upstream as flaky): pass their
# directory as SOCS_SUITE_EXTRA to run them too.
for f in ${SOCS_SUITE_EXTRA_FILES:-}; do FILES+=("$f"); done

for f in "${FILES[@]}"; do
    [ -f "$tests_src/$f" ] || { echo "run.sh: $tests_src/$f not found" >&2; exit 2; }
done
"$python" -c 'import socs, coverage, crossbar' || {
    echo "run.sh: $python lacks socs, coverage or crossbar" >&2; exit 2; }
socs_pkg="$("$python" -c 'import socs, os; print(os.path.dirname(socs.__file__))')"

status=0
# SOCS_SUITE_MODES: which runs (default both); a run left out keeps its earlier
# results in OUT_DIR (e.g. rerun only socs_tcp against a recorded plain run).
for mode in ${SOCS_SUITE_MODES:-plain socs_tcp}; do
    work="$out/$mode"
    rm -rf "$work"; mkdir -p "$work/agent-logs"
    # SOCS's layout: tests/ beside socs/ (the tests start ../socs/agents/<name>/agent.py)
    cp -r "$tests_src" "$work/tests"
    ln -s "$socs_pkg" "$work/socs"
    env_mode=(env -u SOCS_TCP)
    [ "$mode" = socs_tcp ] && env_mode=(env SOCS_TCP=1)
    echo "== $mode: ${FILES[*]}"
    (cd "$work/tests" && unshare -n sh -c '
        ip link set lo up && exec "$@"' sh \
        "${env_mode[@]}" PATH="$venv_bin:$PATH" PYTHONPATH="$here" \
        SOCS_SUITE_AGENT_LOGS="$work/agent-logs" OCS_CONFIG_DIR="$work/tests" \
        "$python" -m pytest -p socs_suite_plugin -p no:cacheprovider -o addopts='' \
        -p no:twisted -p no:socs_tcp \
        --timeout=300 -rA --junitxml="$work/junit.xml" "${FILES[@]}" \
        > "$work/pytest.txt" 2>&1)
    tail -n 1 "$work/pytest.txt"
    grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL)' "$work/pytest.txt" | sort > "$work/outcomes.txt"
done

echo "== tests passing on plain socs but not with SOCS_TCP=1"
comm -23 <(grep '^PASSED' "$out/plain/outcomes.txt" | sed 's/^PASSED //') \
         <(grep '^PASSED' "$out/socs_tcp/outcomes.txt" | sed 's/^PASSED //') | tee "$out/regressions.txt"
[ -s "$out/regressions.txt" ] && status=1

echo "== SOCS_TCP=1 agents that logged the takeover"
TAKEN='SOCS_TCP: on socs_tcp: .*'
if ! grep -h -o -m1 -E "$TAKEN" "$out"/socs_tcp/agent-logs/*.log 2>/dev/null | sort | uniq -c; then
    echo "run.sh: no agent of the SOCS_TCP=1 run logged socs_tcp taking over" >&2
    status=1
fi
grep -L -E "$TAKEN" "$out"/socs_tcp/agent-logs/*.log 2>/dev/null | sed 's/^/  no takeover line: /'
echo "== outputs in $out"
exit $status
