#!/bin/sh
# What the official image's docker-entrypoint.sh does, with Debian's tools.
set -e
# A first argument that is an option or a config file means redis-server.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
# The official build turns protected mode off (clients come over the container network,
# not loopback); given first, so the command's own options still win.
if [ "$1" = redis-server ]; then
    shift
    if [ "${1%.conf}" != "${1:-}" ]; then
        conf=$1
        shift
        set -- redis-server "$conf" --protected-mode no "$@"
    else
        set -- redis-server --protected-mode no "$@"
    fi
fi
exec "$@"
