#!/usr/bin/env bash
# Outside TLS auditors against a live `sft serve` whose certificates were made
# by `sft cert ca` + `sft cert server` (THREATS.md, "Outside auditors"):
#
#   1. openssl s_client: TLS 1.3 handshakes and verifies against the CA;
#      TLS 1.2, 1.1 and 1.0 are refused.
#   2. testssl.sh (Debian package `testssl.sh`), judged from its JSON: no
#      finding of severity MEDIUM, HIGH or CRITICAL.
#   3. sslyze --mozilla_config=modern (PyPI, in a venv under ~/.cache): it
#      exits non-zero when the server is not compliant.
#
#   benches/tls-audit.sh            all three (installs what is missing)
#   TLS_AUDIT_ONLY="openssl" ...    a subset: openssl testssl sslyze
#   TLS_AUDIT_KEEP=DIR              keep the auditors' JSON reports in DIR
#   SFT_CERT_DAYS=N                 server certificate validity, when `sft cert
#                                   server` has --days (default 90: the most
#                                   Mozilla's "modern" profile allows)
#
# Starts its own server on 127.0.0.1 (a free port) and stops it by PID.
# Exits non-zero if any auditor's verdict is a failure.
set -euo pipefail
# shellcheck source=benches/sft-lib.sh
source "$(dirname "$0")/sft-lib.sh"
ONLY=${TLS_AUDIT_ONLY:-openssl testssl sslyze}
want() { [[ " $ONLY " == *" $1 "* ]]; }

# sslyze's "modern" profile wants a certificate life span of at most 90 days
export SFT_CERT_DAYS=${SFT_CERT_DAYS:-90}
sft_bin
WORK=$(mktemp -d /tmp/sft-tls-audit.XXXXXX)
KEEP=${TLS_AUDIT_KEEP:-$WORK}
mkdir -p "$KEEP"
SRV_WRAP=()
trap 'stop_server; rm -rf "$WORK"' EXIT
start_server "$WORK/srv" --fsync never
HOST=${SRV_ADDR%:*}
PORT=${SRV_ADDR##*:}
CA=$WORK/srv/pki/ca.pem
say "server $SRV_ADDR (pid $SRV_PID), certificates by sft cert"

if want openssl; then
    command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
    out=$(timeout 20 openssl s_client -connect "$SRV_ADDR" -servername localhost -tls1_3 \
        -alpn sft/1 -CAfile "$CA" -verify_return_error -verify_hostname localhost </dev/null 2>&1 || true)
    if grep -q 'Protocol *: *TLSv1.3\|New, TLSv1.3' <<<"$out" && grep -q 'Verify return code: 0 (ok)' <<<"$out"; then
        ok "openssl: TLS 1.3 handshake, certificate verified (Verify return code: 0)"
    else
        bad "openssl: TLS 1.3 handshake with verification"
        grep -E 'Verify return|error|Protocol' <<<"$out" | head -5 >&2 || true
    fi
    for v in tls1_2 tls1_1 tls1; do
        # older versions need a lower security level in OpenSSL 3 to even be offered
        out=$(timeout 20 openssl s_client -connect "$SRV_ADDR" -servername localhost "-$v" \
            -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1 || true)
        if grep -qE 'Protocol *: *TLSv1(\.[0-2])?$|New, TLSv1(\.[0-2])?,' <<<"$out" &&
            ! grep -q 'Cipher is (NONE)\|Cipher *: *0000' <<<"$out"; then
            bad "openssl: -$v must be refused, but a session was established"
        else
            ok "openssl: -$v refused"
        fi
    done
    # 0-RTT: the server must not accept early data
    sess=$WORK/sess.pem
    timeout 20 openssl s_client -connect "$SRV_ADDR" -servername localhost -tls1_3 -alpn sft/1 \
        -CAfile "$CA" -sess_out "$sess" </dev/null >/dev/null 2>&1 || true
    if [[ -s $sess ]]; then
        printf 'early' >"$WORK/early"
        out=$(timeout 20 openssl s_client -connect "$SRV_ADDR" -servername localhost -tls1_3 \
            -alpn sft/1 -CAfile "$CA" -sess_in "$sess" -early_data "$WORK/early" </dev/null 2>&1 || true)
        if grep -q 'Early data was accepted' <<<"$out"; then
            bad "openssl: 0-RTT early data must be refused"
        else
            ok "openssl: 0-RTT early data not accepted"
        fi
    else
        ok "openssl: no resumable session offered (0-RTT impossible)"
    fi
fi

if want testssl; then
    command -v testssl >/dev/null || command -v testssl.sh >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq testssl.sh; }
    TESTSSL=$(command -v testssl || command -v testssl.sh)
    json=$KEEP/testssl.json
    rm -f "$json"
    say "testssl.sh: running (a few minutes)"
    # its exit status counts findings of every kind; the verdict is read from the JSON
    timeout 900 "$TESTSSL" --quiet --color 0 --warnings off --nodns none --ip "$HOST" \
        --add-ca "$CA" --openssl-timeout 10 --jsonfile "$json" "localhost:$PORT" \
        >"$KEEP/testssl.txt" 2>&1 || true
    if [[ ! -s $json ]]; then
        bad "testssl.sh produced no JSON (see $KEEP/testssl.txt)"
    else
        python3 - "$json" <<'EOF' >"$WORK/testssl.verdict" || true
import json, sys
rank = {"CRITICAL": 4, "HIGH": 3, "MEDIUM": 2}
findings = json.load(open(sys.argv[1]))
bad = [f for f in findings if f.get("severity") in rank]
# "scanProblem" entries are testssl's own trouble, reported separately
for f in sorted(bad, key=lambda f: -rank[f["severity"]]):
    print(f'{f["severity"]:8} {f["id"]}: {f["finding"]}')
print(f"{len(findings)} findings, {len(bad)} at MEDIUM or above")
sys.exit(1 if bad else 0)
EOF
        n=$(tail -1 "$WORK/testssl.verdict")
        if grep -q ' 0 at MEDIUM' <<<"$n"; then
            ok "testssl.sh: $n"
        else
            bad "testssl.sh: $n"
            head -n -1 "$WORK/testssl.verdict" | sed 's/^/    /' >&2
        fi
    fi
fi

if want sslyze; then
    VENV=${SSLYZE_VENV:-$HOME/.cache/sft-sslyze-venv}
    if [[ ! -x $VENV/bin/sslyze ]]; then
        python3 -m venv "$VENV" && "$VENV/bin/pip" install -q sslyze || die "cannot install sslyze"
    fi
    # sslyze trusts the system stores only: give it ours for the chain
    set +e
    timeout 600 "$VENV/bin/sslyze" --mozilla_config=modern --json_out "$KEEP/sslyze.json" \
        --certinfo_ca_file "$CA" "localhost:$PORT{$HOST}" >"$KEEP/sslyze.txt" 2>&1
    rc=$?
    set -e
    if [[ $rc == 0 ]]; then
        ok "sslyze --mozilla_config=modern: compliant"
    else
        bad "sslyze --mozilla_config=modern: exit $rc, not compliant"
        sed -n '/COMPLIANCE AGAINST MOZILLA/,$p' "$KEEP/sslyze.txt" | grep -v '^\s*$' | head -20 | sed 's/^/    /' >&2
    fi
fi

finish
