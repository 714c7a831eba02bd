#!/usr/bin/env bash
# The README's first command on a brand-new machine, checked for real.
#
#   tests/fresh/fresh_root.sh [--rev REV] [--tests] [--keep]
#
# Clones this repository (HEAD, or REV) into a new Debian bookworm root: debootstrap
# minbase plus git, ca-certificates and sudo, nothing else (tests/fresh/rootfs.sh keeps it
# as a cached tarball). There, as an ordinary user with sudo and a clean environment, it
# runs `scripts/run.sh` on free ports (PROXY_PORT, AP_REDIS_PORT, AP_DEMO_PORT), then does
# what a new user does: waits for /health, pastes the lines run.sh printed (create a key
# with the admin key, call /v1/messages with it), checks the answer and the usage the admin
# API reports, and stops run.sh as Ctrl-C would (it must stop everything and exit 0).
#
#   --tests   run the README's second command instead: `scripts/test.sh --quick`
#   --tests-full  the same, whole: `scripts/test.sh` (sanitizers, valgrind, fuzzing too)
#   --rev     test another commit (e.g. one from before a fix, to see the check fail)
#   --keep    leave the root in place afterwards (its path is printed)
#
# The root lives in private mount and PID namespaces (unshare): /proc, /dev and the host's
# resolv.conf are mounted there only, and when the namespace's first process ends every
# process and mount in it goes too, whatever happened. Needs root. Exit 0 when it passed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REV=HEAD
MODE=run
FULL=0
KEEP=0
TIMEOUT=${AP_FRESH_TIMEOUT:-900} # seconds for run.sh to install, build and come up
while [ $# -gt 0 ]; do
    case "$1" in
    --rev) REV=$2; shift 2 ;;
    --tests) MODE=tests; shift ;;
    --tests-full) MODE=tests; FULL=1; shift ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--rev REV] [--tests|--tests-full] [--keep]" >&2; exit 2 ;;
    esac
done

log() { echo "fresh_root: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (chroot, namespaces)"
start=$(date +%s)
"$ROOT/scripts/deps.sh" fresh || die "cannot install what the check needs (scripts/deps.sh fresh)"

sha=$(git -C "$ROOT" rev-parse --verify "$REV^{commit}") || die "no commit $REV"
[ "$REV" != HEAD ] || git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null ||
    log "note: uncommitted changes are not tested (the root gets a clone of HEAD)"
tarball=$("$ROOT/tests/fresh/rootfs.sh" fresh) || die "no root file system"

work=$(mktemp -d /var/tmp/ap-fresh.XXXXXX)
chmod 755 "$work"
rootfs=$work/root
ns_pid=
pid1=
cleanup() {
    if [ -n "$ns_pid" ] && kill -0 "$ns_pid" 2>/dev/null; then
        [ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null # ends the PID namespace
        wait "$ns_pid" 2>/dev/null
    fi
    # The mounts lived in the namespace; never delete through one that somehow did not.
    if grep -q " $rootfs/" /proc/self/mounts; then
        log "unmounting what is left under $rootfs"
        grep " $rootfs/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
    fi
    if [ "$KEEP" -eq 1 ]; then
        log "kept the root in $rootfs"
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT

t0=$(date +%s)
mkdir "$rootfs"
tar --numeric-owner -C "$rootfs" -xzf "$tarball" || die "cannot unpack $tarball"
log "root unpacked in $(( $(date +%s) - t0 ))s ($tarball)"

# What an installed machine has and debootstrap leaves out: its name in /etc/hosts (sudo
# looks it up).
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$(hostname)" >"$rootfs/etc/hosts"
# The network's own trust anchors come along (a TLS-inspecting egress proxy's CA, as on the
# machines CI runs on here): they belong to the network, not to the machine's software, and
# without them npm cannot reach its registry from the root (apt uses plain HTTP).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the root"
fi
# A user as a new machine would have one: a home, sudo without a password.
chroot "$rootfs" useradd -m -s /bin/bash -G sudo dev || die "useradd"
echo 'dev ALL=(ALL) NOPASSWD:ALL' >"$rootfs/etc/sudoers.d/dev"
chmod 440 "$rootfs/etc/sudoers.d/dev"
repo=/home/dev/api-proxy
git clone -q "$ROOT" "$rootfs$repo" && git -C "$rootfs$repo" checkout -q "$sha" || die "git clone"
chroot "$rootfs" chown -R dev:dev "$repo"
log "cloned $(git -C "$ROOT" log -1 --format='%h %s' "$sha" | cut -c1-72)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proxy_port=$(free_port); redis_port=$(free_port); demo_port=$(free_port)
url=http://127.0.0.1:$proxy_port

# As the user, with a login's environment and nothing of ours.
as_user=(setpriv --reuid=dev --regid=dev --init-groups
         env -i HOME=/home/dev USER=dev LOGNAME=dev SHELL=/bin/bash LANG=C.UTF-8
         PATH=/usr/local/bin:/usr/bin:/bin)
if [ "$MODE" = run ]; then
    cmd=(env PROXY_PORT="$proxy_port" AP_REDIS_PORT="$redis_port" AP_DEMO_PORT="$demo_port" scripts/run.sh)
elif [ "$FULL" = 1 ]; then
    cmd=(scripts/test.sh)
else
    cmd=(scripts/test.sh --quick)
fi
# The namespace's first process: mounts what the root needs, then runs the command as
# the user and passes SIGTERM on to it (as Ctrl-C would reach run.sh).
cat >"$work/init.sh" <<'EOF'
#!/bin/bash
rootfs=$1 repo=$2; shift 2
mount -t proc proc "$rootfs/proc" || exit 90
mount --rbind /dev "$rootfs/dev" || exit 90
touch "$rootfs/etc/resolv.conf" && mount --bind /etc/resolv.conf "$rootfs/etc/resolv.conf" || exit 90
child=
trap '[ -n "$child" ] && kill -TERM "$child"' TERM
chroot "$rootfs" /bin/sh -c 'cd "$0" && exec "$@"' "$repo" "$@" &
child=$!
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || exit $rc
done
EOF
chmod +x "$work/init.sh"

t_run=$(date +%s)
unshare --mount --propagation private --pid --fork -- \
    "$work/init.sh" "$rootfs" "$repo" "${as_user[@]}" "${cmd[@]}" >"$work/out.log" 2>&1 &
ns_pid=$!
for _ in $(seq 1 50); do
    pid1=$(pgrep -P "$ns_pid" | head -n1)
    [ -n "$pid1" ] && break
    sleep 0.1
done
[ -n "$pid1" ] || die "the namespace did not start"
log "running ${cmd[*]} as a user with sudo (output: $work/out.log)"

show_log() { log "the command's last lines:"; tail -n "${1:-30}" "$work/out.log" | sed 's/^/    | /' >&2; }

if [ "$MODE" = tests ]; then
    wait "$ns_pid"
    rc=$?
    ns_pid=
    show_log 12
    log "${cmd[*]} exited $rc after $(( $(date +%s) - t_run ))s"
    [ "$rc" -eq 0 ] || die "the README's test command failed in a fresh root"
    log "PASS in $(( $(date +%s) - start ))s"
    exit 0
fi

# ---- run.sh: wait until it is up, as a user would (it prints "Logs:" last) ----
up=0
for _ in $(seq 1 $((TIMEOUT * 2))); do
    if ! kill -0 "$ns_pid" 2>/dev/null; then
        wait "$ns_pid"
        rc=$?
        ns_pid=
        show_log
        die "scripts/run.sh exited with status $rc before the proxy came up"
    fi
    if grep -q '^Logs: ' "$work/out.log" &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ]; then
        up=1
        break
    fi
    sleep 0.5
done
[ "$up" -eq 1 ] || { show_log; die "the proxy did not come up within ${TIMEOUT}s"; }
log "up after $(( $(date +%s) - t_run ))s: $url/health answers 200"

# ---- what run.sh told the user to do next, pasted as it is, as the user ----
next=$(sed -n '/^Next, in another terminal:/,/^Logs: /p' "$work/out.log" | sed '1d;$d')
grep -q "$proxy_port/ui/" <<<"$next" || { show_log; die "run.sh did not print the console's URL"; }
grep -q 'admin_key' <<<"$next" || { show_log; die "run.sh did not say where the admin key is"; }
answer=$(nsenter --target "$pid1" --mount --pid -- chroot "$rootfs" /bin/sh -c 'cd "$0" && exec "$@"' "$repo" \
    "${as_user[@]}" bash -euo pipefail -c "$next" 2>"$work/next.err") ||
    { cat "$work/next.err" >&2; die "the lines run.sh printed failed when pasted"; }
python3 - "$answer" <<'EOF' || die "the answer to /v1/messages is not a message: $answer"
import json, sys
m = json.loads(sys.argv[1])
assert m["type"] == "message" and m["role"] == "assistant", m
assert "Hello" in m["content"][0]["text"], m
assert m["usage"]["output_tokens"] > 0, m
EOF
log "the pasted lines created a key and /v1/messages answered: $(cut -c1-100 <<<"$answer")..."

# ---- the admin API agrees: one key, one request counted ----
admin_key=$(cat "$rootfs$repo/var/admin_key") || die "no var/admin_key"
keys=$(curl -s -H "x-api-key: $admin_key" "$url/admin/keys")
usage=$(curl -s -H "x-api-key: $admin_key" "$url/admin/usage")
python3 - "$keys" "$usage" <<'EOF' || die "admin API: keys $keys usage $usage"
import json, sys
keys, usage = json.loads(sys.argv[1]), json.loads(sys.argv[2])
names = [k["name"] for k in (keys["keys"] if isinstance(keys, dict) else keys)]
assert names == ["me"], names
assert usage["total_requests"] == 1, usage
EOF
log "admin API: one key named me, one request counted"

# ---- Ctrl-C: everything stops, run.sh exits 0 ----
t_stop=$(date +%s)
kill -TERM "$pid1"
for _ in $(seq 1 80); do kill -0 "$ns_pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$ns_pid" 2>/dev/null && { show_log; die "run.sh did not stop within 40 s of SIGTERM"; }
wait "$ns_pid"
rc=$?
ns_pid=
[ "$rc" -eq 0 ] || { show_log; die "run.sh exited $rc on SIGTERM (want 0)"; }
curl -s -o /dev/null "$url/health" && die "the proxy still answers after run.sh stopped"
log "stopped cleanly in $(( $(date +%s) - t_stop ))s"
log "PASS in $(( $(date +%s) - start ))s"
