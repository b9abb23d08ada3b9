#!/usr/bin/env bash
# ceph.sh install|start|stop|env DIR [PORT]   (from shared/s3/ceph.sh: no uuidgen needed, runs
# apt-get update itself when it finds no packages, and `start` reuses a cluster already running)
# A real S3 engine for tests on one machine: Ceph RGW 16.2 (Debian 12's packages), one monitor,
# one memstore OSD and radosgw on 127.0.0.1:PORT. Nothing is installed system-wide: the packages
# are unpacked into DIR/root with dpkg -x. Needs `apt-get update` to have been run once.
#   install  ~5 s (downloads ~66 MB of .deb files once)
#   start    ~15 s on an idle machine; prints the endpoint, access key and secret
#   stop     stops the three daemons by their pid files (the OSD takes ~10 s to exit)
#   env      prints export lines for AWS_* variables and the endpoint
# The monitor's port 3300 is fixed: run one cluster at a time. Data lives in memory (memstore).
# Keys: S3_ACCESS_KEY / S3_SECRET_KEY (default sftkey / sftsecret). Bucket names need >= 3 characters.
set -euo pipefail
cmd=${1:?usage: ceph.sh install|start|stop|env DIR [PORT]}
D=$(realpath -m "${2:?DIR}"); PORT=${3:-7480}
R=$D/root; B=$D/run; L=$R/usr/lib/x86_64-linux-gnu
AK=${S3_ACCESS_KEY:-sftkey}; SK=${S3_SECRET_KEY:-sftsecret}
export LD_LIBRARY_PATH=$L/ceph:$L:$R/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$R/usr/lib/python3/dist-packages PATH=$R/usr/bin:$R/usr/sbin:$PATH

# the kernel makes UUIDs: no uuidgen (uuid-runtime) needed
uuid() { cat /proc/sys/kernel/random/uuid; }
up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

case $cmd in
install)
  [ -x "$R/usr/bin/radosgw" ] && { echo "ceph already unpacked in $R"; exit 0; }
  mkdir -p "$D/debs" "$R"; cd "$D/debs"
  pkgs=$(apt-get install -s --no-install-recommends radosgw ceph-mon ceph-osd 2>/dev/null | awk '/^Inst/{print $2}')
  if [ -z "$pkgs" ]; then apt-get update -qq >/dev/null 2>&1 || true
    pkgs=$(apt-get install -s --no-install-recommends radosgw ceph-mon ceph-osd 2>/dev/null | awk '/^Inst/{print $2}'); fi
  [ -n "$pkgs" ] || { echo "apt-get found no ceph packages (even after apt-get update)" >&2; exit 1; }
  # shellcheck disable=SC2086
  apt-get download $pkgs >/dev/null
  for f in *.deb; do dpkg -x "$f" "$R"; done
  echo "ceph unpacked in $R" ;;
start)
  # already serving (a cluster left by an earlier run): reuse it
  if up && [ -f "$B/client.rgw.a.pid" ] && kill -0 "$(cat "$B/client.rgw.a.pid")" 2>/dev/null; then
    echo "endpoint http://127.0.0.1:$PORT access_key $AK secret_key $SK (already running)"; exit 0; fi
  rm -rf "$B"; mkdir -p "$B/mon" "$B/osd"; FSID=$(uuid); C=(-c "$B/ceph.conf")
  cat >"$B/ceph.conf" <<CONF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:3300
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_autoscale_mode = off
osd_pool_default_pg_num = 8
osd_crush_chooseleaf_type = 0
run_dir = $B
pid_file = $B/\$name.pid
admin_socket = $B/\$name.asok
log_file = $B/\$name.log
plugin_dir = $L/ceph
erasure_code_dir = $L/ceph/erasure-code
osd_class_dir = $L/rados-classes
keyring = $B/keyring
mon_data = $B/mon
osd_data = $B/osd
osd_objectstore = memstore
memstore_device_bytes = ${CEPH_MEM_BYTES:-4294967296}
[client.rgw.a]
# tcp_nodelay: without it each small GET waits 40 ms for a delayed ACK
rgw_frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw_data = $B/rgw
# deleted objects' space comes back within seconds, not hours (tests and benches reuse one
# memstore cluster)
rgw_gc_obj_min_wait = 5
rgw_gc_processor_period = 5
CONF
  ceph-authtool --create-keyring "$B/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --fsid "$FSID" --addv a '[v2:127.0.0.1:3300]' "$B/monmap" >/dev/null
  ceph-mon "${C[@]}" --mkfs -i a --monmap "$B/monmap" && ceph-mon "${C[@]}" -i a
  U=$(uuid); ID=$(timeout 60 ceph "${C[@]}" osd new "$U")
  ceph-osd "${C[@]}" -i "$ID" --mkfs --osd-uuid "$U" 2>/dev/null && ceph-osd "${C[@]}" -i "$ID" 2>/dev/null
  radosgw "${C[@]}" -n client.rgw.a
  for _ in $(seq 240); do up && break; sleep 0.25; done
  up || { echo "radosgw did not open port $PORT; see $B/*.log" >&2; exit 1; }
  timeout 60 radosgw-admin "${C[@]}" user create --uid=sft --display-name=sft --access-key="$AK" --secret-key="$SK" >/dev/null
  echo "endpoint http://127.0.0.1:$PORT access_key $AK secret_key $SK" ;;
stop)
  pids=()
  for n in client.rgw.a osd.0 mon.a; do
    [ -f "$B/$n.pid" ] && p=$(cat "$B/$n.pid") && kill "$p" 2>/dev/null && pids+=("$p")
  done
  # radosgw sometimes ignores SIGTERM: after 15 s, SIGKILL what is left of these pids
  for _ in $(seq 60); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.25
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done ;;
env)
  echo "export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=us-east-1 S3_ENDPOINT=http://127.0.0.1:$PORT" ;;
*) echo "usage: ceph.sh install|start|stop|env DIR [PORT]" >&2; exit 2 ;;
esac
