/*
 * ap_version: the build's version (`git describe` at build time, or
 * `make AP_VERSION=...`), as replicas report it in /health and /admin/fleet.
 * Defined by a file the Makefile generates, rewritten only when it changes.
 */
#ifndef AP_VERSION_H
#define AP_VERSION_H

extern const char ap_version[];

#endif
