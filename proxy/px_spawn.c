/*
 * Runs a command (argv, no shell) without blocking the loop: posix_spawn,
 * a pidfd that becomes readable when the child exits, the child's output
 * read from a pipe (the first line becomes the failure reason), and a time
 * limit after which the child is killed.
 */
#include "px.h"

#include "ap_log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct px_spawn {
    pid_t pid;
    int out_fd;                 /* owned: the child's stdout+stderr */
    int pid_fd;                 /* owned: pidfd, or -1 (then a polling timer) */
    struct event *out_ev;       /* owned */
    struct event *exit_ev;      /* owned */
    struct event *limit;        /* owned */
    char output[512];
    size_t out_len;
    int timed_out;
    px_spawn_cb cb;
    void *arg;
};

static void spawn_free(struct px_spawn *s)
{
    if (s->out_ev)
        event_free(s->out_ev);
    if (s->exit_ev)
        event_free(s->exit_ev);
    if (s->limit)
        event_free(s->limit);
    if (s->out_fd >= 0)
        close(s->out_fd);
    if (s->pid_fd >= 0)
        close(s->pid_fd);
    free(s);
}

static void spawn_on_output(evutil_socket_t fd, short what, void *arg)
{
    struct px_spawn *s = arg;
    char buf[4096];
    (void)what;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            event_del(s->out_ev);
        return;
    }
    size_t room = sizeof(s->output) - 1 - s->out_len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(s->output + s->out_len, buf, take);
    s->out_len += take;
    s->output[s->out_len] = '\0';
}

static void spawn_on_exit(evutil_socket_t fd, short what, void *arg)
{
    struct px_spawn *s = arg;
    int st;
    (void)fd;
    (void)what;
    pid_t w = waitpid(s->pid, &st, WNOHANG);
    if (w == 0)
        return; /* polling fallback: not yet */
    spawn_on_output(s->out_fd, EV_READ, s); /* what is left in the pipe */
    char reason[160];
    int ok = 0;
    char *nl = strchr(s->output, '\n');
    if (nl)
        *nl = '\0';
    if (w < 0)
        snprintf(reason, sizeof(reason), "cannot wait for the command");
    else if (s->timed_out)
        snprintf(reason, sizeof(reason), "timed out");
    else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        ok = 1, reason[0] = '\0';
    else if (WIFEXITED(st))
        snprintf(reason, sizeof(reason), "exit status %d%s%.100s", WEXITSTATUS(st), s->output[0] ? ": " : "",
                 s->output);
    else
        snprintf(reason, sizeof(reason), "killed by signal %d", WTERMSIG(st));
    s->cb(s->arg, ok, reason);
    spawn_free(s);
}

static void spawn_on_limit(evutil_socket_t fd, short what, void *arg)
{
    struct px_spawn *s = arg;
    (void)fd;
    (void)what;
    s->timed_out = 1;
    kill(-s->pid, SIGKILL); /* the whole group: what the command started in the background too */
}

int px_spawn_run(struct event_base *base, char *const argv[], int timeout_s, px_spawn_cb cb, void *arg)
{
    int fds[2];
    struct px_spawn *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    s->out_fd = s->pid_fd = -1;
    s->cb = cb;
    s->arg = arg;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        free(s);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    /* Its own process group (so the limit can kill all of it), and SIGPIPE back to default. */
    posix_spawnattr_t at;
    sigset_t def;
    posix_spawnattr_init(&at);
    posix_spawnattr_setpgroup(&at, 0);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawnp(&s->pid, argv[0], &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    s->out_fd = fds[0];
    if (rc != 0) {
        ap_warn(NULL, "cannot run %s: %s", argv[0], strerror(rc));
        spawn_free(s);
        return -1;
    }
    s->pid_fd = (int)syscall(SYS_pidfd_open, s->pid, 0);
    s->out_ev = event_new(base, s->out_fd, EV_READ | EV_PERSIST, spawn_on_output, s);
    s->limit = evtimer_new(base, spawn_on_limit, s);
    if (s->pid_fd >= 0)
        s->exit_ev = event_new(base, s->pid_fd, EV_READ, spawn_on_exit, s);
    else /* kernel without pidfd: look every 50 ms */
        s->exit_ev = event_new(base, -1, EV_PERSIST, spawn_on_exit, s);
    if (s->out_ev == NULL || s->limit == NULL || s->exit_ev == NULL) {
        kill(-s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0); /* just killed: returns at once */
        spawn_free(s);
        return -1;
    }
    struct timeval lim = {timeout_s, 0}, poll = {0, 50000};
    event_add(s->out_ev, NULL);
    event_add(s->limit, &lim);
    event_add(s->exit_ev, s->pid_fd >= 0 ? NULL : &poll);
    return 0;
}
