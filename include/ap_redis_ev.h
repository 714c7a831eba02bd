/* hiredis on libevent with a persistent read event and same-turn writes (ap_redis_ev.c). */
#ifndef AP_REDIS_EV_H
#define AP_REDIS_EV_H

struct event_base;
struct redisAsyncContext;

/* Attaches a new context to the loop, as redisLibeventAttach does. 0, or -1. */
int ap_redis_ev_attach(struct redisAsyncContext *ac, struct event_base *base);

#endif
