# sft cases for ../shared/bench/peers.sh (sourced through EXTRA_CASES by benches/peers.sh).
# Two servers per link: uploads land in $SRV/up (port 9443), downloads come from $DATA (9444).
# Both use the peers' own TLS certificate and --fsync never, as scp and nginx do not fsync either.
SFT=${SFT:?set SFT to the sft binary}
SFT_TOKENS=$CONF/sft-tokens

# sft_run CASE COMPRESS DIR SRC DST: one transfer; its --stats line (file and wire bytes) is
# appended to $RES/sft-wire.log with the link and case, for wire-byte comparisons.
sft_run() {
    local c=$1 z=$2 d=$3 s=$4 t=$5
    local env=(env SFT_CA="$CACERT" SFT_TOKEN_FILE="$SFT_TOKENS" SFT_COMPRESS="$z")
    local stats=$RES/sft-wire.log
    if [[ $d == up ]]; then
        $NSX "${env[@]}" "$SFT" --stats --server "$HOSTIP:9443" put "$s" --as "${t#"$SRV/up/"}" --overwrite 2>"$stats.tmp"
    else
        $NSX "${env[@]}" "$SFT" --stats --server "$HOSTIP:9444" get "${s#"$DATA/"}" -o "$t" --force 2>"$stats.tmp"
    fi
    local rc=$?
    sed "s|^|$LINK\t$c\t$d\t|" "$stats.tmp" >>"$stats"
    return $rc
}
case_sft() { sft_run sft auto "$@"; }            # the default: adaptive
case_sft_off() { sft_run sft_off off "$@"; }     # never compress
case_sft_z3() { sft_run sft_z3 3 "$@"; }         # fixed zstd level 3
# the default again, run after the others: a control for position in the interleaving
# (a case right after a 1 GiB upload shares the disk with its write-back)
case_sft_again() { sft_run sft_again auto "$@"; }

extra_start() {
    if [[ ! -s $SFT_TOKENS ]]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SFT_TOKENS")
    fi
    local common=(--cert "$CACERT" --key "$CONF/tls/key.pem" --token-file "$SFT_TOKENS" --fsync never)
    case $1 in
    lo)
        bg_start sft_up_lo "$SFT" serve --root "$SRV/up" --listen 127.0.0.1:9443 "${common[@]}"
        bg_start sft_down_lo "$SFT" serve --root "$DATA" --listen 127.0.0.1:9444 "${common[@]}"
        wait_port "" 127.0.0.1 9443
        wait_port "" 127.0.0.1 9444
        ;;
    tmpfs) # uploads onto tmpfs, as peers.sh's dirs-tmpfs does for scp/rsync (own port: the
        # loopback servers may still be running)
        SFT_UP_PORT=9445
        bg_start sft_up_tmpfs "$SFT" serve --root /dev/shm/sftb-up --listen 127.0.0.1:9445 "${common[@]}"
        wait_port "" 127.0.0.1 9445
        ;;
    ns)
        bg_start sft_up_ns ip netns exec "$NS_S" "$SFT" serve --root "$SRV/up" --listen 0.0.0.0:9443 "${common[@]}"
        wait_port "$NS_C" "$IP1_S" 9443
        ;;
    esac
}

LO_CASES+=(sft sft_off sft_z3 sft_again)
NS_CASES+=(sft sft_off sft_z3)

# directories (upload only, like scp -r / rsync -a): one connection, pipelined
case_sft_r() {
    local s=$2 t=$3 rd
    t=${t#"$SRV/up/"}
    rd=$(dirname "${t#/dev/shm/sftb-up/}")
    [[ $rd == . ]] && rd=
    $NSX env SFT_CA="$CACERT" SFT_TOKEN_FILE="$SFT_TOKENS" "$SFT" --quiet --server "$HOSTIP:${SFT_UP_PORT:-9443}" \
        put -r "$s" ${rd:+"$rd"} >/dev/null
}
DIR_CASES+=(sft_r)
