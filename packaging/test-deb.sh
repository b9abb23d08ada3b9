#!/usr/bin/env bash
# Build the Debian package and check what it holds, unpacked with dpkg -x:
# the binary (it runs), man page, completions, the hardened systemd unit,
# the settings file, and the maintainer scripts that make the sft user and
# /etc/sft, /var/lib/sft. Run by .ci/run (SFT_DEB_PROFILE=dev there, to
# reuse the test build); exits non-zero with the first thing missing.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }

packaging/build-deb.sh "$work/out" >/dev/null
debs=("$work"/out/sft_*.deb)
[ -f "${debs[0]}" ] || fail "no sft_*.deb built"
deb=${debs[0]}
dpkg-deb --info "$deb" >/dev/null || fail "dpkg-deb cannot read $deb"
dpkg -x "$deb" "$work/root"
dpkg-deb -e "$deb" "$work/control"
r=$work/root

# the binary runs and is the one whose man page and completions are shipped
[ -x "$r/usr/bin/sft" ] || fail "usr/bin/sft missing or not executable"
"$r/usr/bin/sft" --version | grep -q '^sft ' || fail "usr/bin/sft --version"
zcat "$r/usr/share/man/man1/sft.1.gz" | grep -q '^\.TH' || fail "man page missing or not roff"
grep -q '_sft' "$r/usr/share/bash-completion/completions/sft" || fail "bash completion"
head -1 "$r/usr/share/zsh/vendor-completions/_sft" | grep -q '#compdef sft' || fail "zsh completion"
grep -q '^complete -c sft' "$r/usr/share/fish/vendor_completions.d/sft.fish" || fail "fish completion"
if command -v bash >/dev/null; then bash -n "$r/usr/share/bash-completion/completions/sft" || fail "bash completion does not parse"; fi

# the unit, with the hardening README.md's "Running as a service" promises
unit=$r/lib/systemd/system/sft.service
[ -f "$unit" ] || fail "lib/systemd/system/sft.service missing"
for line in 'User=sft' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
    'CapabilityBoundingSet=' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
    'SystemCallFilter=@system-service' 'ExecReload=/bin/kill -HUP $MAINPID' \
    'KillSignal=SIGTERM' 'ReadWritePaths=/var/lib/sft' 'EnvironmentFile=-/etc/sft/sft.env'; do
    grep -qxF "$line" "$unit" || fail "sft.service lacks: $line"
done
grep -q '^ExecStart=/usr/bin/sft serve --root /var/lib/sft/data --state-dir /var/lib/sft/state' "$unit" ||
    fail "sft.service ExecStart"
grace=$(sed -n 's/^ExecStart=.*--grace \([0-9]*\)s.*/\1/p' "$unit")
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
[ -n "$grace" ] && [ -n "$stop" ] && [ "$stop" -gt "$grace" ] ||
    fail "TimeoutStopSec ($stop) must be above --grace ($grace)"
nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
maxconn=$(sed -n 's/^SFT_SERVE_ARGS=.*--max-connections \([0-9]*\).*/\1/p' "$r/etc/sft/sft.env")
[ -n "$maxconn" ] && [ "$nofile" -ge $((maxconn * 8 + 64)) ] ||
    fail "LimitNOFILE ($nofile) too small for --max-connections $maxconn"
if command -v systemd-analyze >/dev/null; then
    # verify against the unpacked binary (not installed at /usr/bin here)
    sed "s#/usr/bin/sft#$r/usr/bin/sft#; /^Documentation=/d" "$unit" > "$work/sft.service"
    systemd-analyze verify "$work/sft.service" || fail "systemd-analyze verify sft.service"
fi

# SystemCallFilter=@system-service: every system call the packaged server
# makes through a session (put, ls, get, status, reload, rm, SIGHUP, SIGTERM)
# must be in that set (systemd is not PID 1 here, so the unit is not run)
if command -v strace >/dev/null && command -v systemd-analyze >/dev/null; then
    expand() {
        systemd-analyze syscall-filter "$1" | sed '1d; s/#.*//' | awk 'NF {print $1}' |
            while read -r s; do case $s in @*) expand "$s" ;; *) echo "$s" ;; esac; done
    }
    expand @system-service | sort -u > "$work/allowed"
    sc=$work/sc
    mkdir -p "$sc/data"
    strace -f -qq -o "$sc/trace" "$r/usr/bin/sft" serve --listen 127.0.0.1:0 --root "$sc/data" \
        --state-dir "$sc/state" > "$sc/out" 2> "$sc/err" &
    tracer=$!
    for _ in $(seq 100); do grep -q '^connect with' "$sc/out" 2>/dev/null && break; sleep 0.2; done
    server=$(ps -o pid= --ppid "$tracer" | tr -d ' ')
    [ -n "$server" ] || fail "the packaged server did not start: $(cat "$sc/err")"
    (
        export SFT_SERVER=$(sed -n 's/^listening on //p' "$sc/out")
        export SFT_PIN=$(sed -n 's/^certificate sha256: //p' "$sc/out") SFT_TOKEN_FILE=$sc/state/token
        head -c 3000000 /dev/urandom > "$sc/big"
        echo small > "$sc/small"
        c="$r/usr/bin/sft -q --timeout 20s"
        $c put "$sc/big" "$sc/small" >/dev/null && $c ls -l >/dev/null &&
            $c get big -o "$sc/back" >/dev/null && cmp -s "$sc/big" "$sc/back" &&
            $c admin status >/dev/null && $c admin reload 2>/dev/null && $c rm small &&
            $c --compress 3 put "$sc/small" --as c >/dev/null
    ) || { kill "$server"; fail "a session with the packaged server failed"; }
    kill -HUP "$server"
    sleep 0.5
    kill -TERM "$server"
    wait "$tracer" || true
    awk '{ l = $0; sub(/^[0-9]+ +/, "", l); if (match(l, /^[a-z_0-9]+\(/)) print substr(l, 1, RLENGTH - 1) }' \
        "$sc/trace" | sort -u > "$work/used"
    grep -qx openat2 "$work/used" || fail "no openat2 in the trace: strace did not follow the server"
    outside=$(comm -23 "$work/used" "$work/allowed" | tr '\n' ' ')
    [ -z "$outside" ] || fail "system calls outside @system-service: $outside"
    echo "test-deb: the server's $(wc -l < "$work/used") system calls are all in @system-service"
else
    echo "test-deb: strace or systemd-analyze missing: system call check skipped" >&2
fi

# settings file, marked as a conffile
[ -f "$r/etc/sft/sft.env" ] || fail "etc/sft/sft.env missing"
grep -qx '/etc/sft/sft.env' "$work/control/conffiles" || fail "/etc/sft/sft.env is not a conffile"

# maintainer scripts: the system user and the directories
c=$work/control
grep -q 'adduser --system' "$c/postinst" || fail "postinst does not create the sft system user"
grep -q '/etc/sft' "$c/postinst" || fail "postinst does not make /etc/sft"
grep -q '/var/lib/sft/data /var/lib/sft/state' "$c/postinst" || fail "postinst does not make /var/lib/sft"
for s in postinst prerm postrm; do sh -n "$c/$s" || fail "$s does not parse"; done
grep -q '^Package: sft$' "$c/control" || fail "control: Package"
grep -q '^Depends:.*adduser' "$c/control" || fail "control: Depends lacks adduser"

echo "test-deb: ok: $(basename "$deb") ($(dpkg-deb -f "$deb" Installed-Size) KiB installed)"
