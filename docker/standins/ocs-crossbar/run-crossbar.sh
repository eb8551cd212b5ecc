#!/bin/bash
# Start crossbar the way OCS's crossbar image does: a config.json mounted in
# /ocs/.crossbar wins; otherwise the OCS template is filled from the
# environment. Written for the stand-in image (see Dockerfile).
set -euo pipefail

CBDIR=/ocs/.crossbar
address_root=${OCS_ADDRESS_ROOT:-observatory}
realm=${OCS_REALM:-test_realm}
port=${OCS_PORT:-8001}

if [[ -e "$CBDIR/config.json" ]]; then
    echo "run-crossbar: using the mounted $CBDIR/config.json"
    config=$CBDIR/config.json
else
    echo "run-crossbar: OCS template with address_root=$address_root realm=$realm port=$port"
    config=$CBDIR/config-with-address.json
    sed -e "s/{address_root}/$address_root/g" -e "s/{realm}/$realm/g" -e "s/{port}/$port/g" \
        "$CBDIR/config-with-address.json.template" >"$config"
fi

# exec: crossbar becomes PID 1 (under docker) and gets SIGTERM from `docker stop`.
exec crossbar start --cbdir "$CBDIR" --config "$config"
