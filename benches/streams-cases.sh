# sft cases with several streams for ../shared/bench/peers.sh (sourced through EXTRA_CASES by
# benches/streams.sh). The servers are those of peers-sft.sh: uploads to $SRV/up on port 9443.
source "$(dirname "${BASH_SOURCE[0]}")/peers-sft.sh"

# sft_streams CASE STREAMS COMPRESS DIR SRC DST
sft_streams() {
    local c=$1 n=$2 rc
    shift 2
    export SFT_STREAMS=$n
    sft_run "$c" "$@"
    rc=$?
    unset SFT_STREAMS
    return $rc
}
case_sft_s1() { sft_streams sft_s1 1 auto "$@"; }     # one connection, as before
case_sft_auto() { sft_streams sft_auto auto auto "$@"; } # the default
case_sft_s4() { sft_streams sft_s4 4 auto "$@"; }
case_sft_s8() { sft_streams sft_s8 8 auto "$@"; }

# (sft_run runs "$NSX env ... $SFT": ip netns exec and env keep the exported SFT_STREAMS)
NS_CASES+=(rsync sft_s1 sft_auto sft_s4 sft_s8)
LO_CASES+=(sft_s1 sft_auto)
