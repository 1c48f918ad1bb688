/*
 * A closed-loop load client for the seed's upper-casing protocol, in C so
 * that its own cost is small and fixed and the server's CPU figures are the
 * server's.  One OS thread, epoll (level-triggered), N connections, each with
 * one SIZE-byte line in flight; every reply is checked against the line
 * upper-cased.  `greenline bench` compiles it (greenline.tools.cclient);
 * by hand:
 *
 *   cc -O2 -o upper_client upper_client.c
 *   ./upper_client [-b] [-H] [-s SIZE] HOST PORT CONNECTIONS WARMUP_S SECONDS
 *
 * Connecting.  By default one connection at a time, with a round trip on
 * each before the next is opened, so that even the seed's listen(5) never
 * drops a handshake.  With -b ("burst"): every connection is opened at once
 * (non-blocking connects, then wait until all are established; a connect
 * that fails is an error), then the first line is sent on all of them
 * together, and the time from that moment to each connection's first reply
 * is measured.
 *
 * Measuring.  WARMUP_S seconds of load, then a window of SECONDS.  It
 * prints "mark start" (flushed) when the window opens and "mark end" when
 * it closes, so that a driver can read the server's CPU time at both; then
 * one line of results:
 *
 *   result requests=N seconds=S rps=R errors=0 connections=C
 *          p50_us=.. p90_us=.. p99_us=.. max_us=..         (one line)
 *          [connect_s=.. first_got=.. first_missing=.. first_p99_s=.. first_max_s=..]
 *
 * requests are the replies completed in the window; p50..max the latency
 * (line sent to whole reply in) of each of them.  The first_* keys come
 * with -b: how many connections had their first reply before the window
 * closed, how many had none, and the p99 and max of those times; connect_s
 * is how long opening them all took.
 *
 * With -H, after the result line it keeps every connection open until its
 * standard input reaches end of file, so that a driver can read the
 * server's memory with the connections still there.
 *
 * Exits 1 on a wrong reply, a connection closed, refused or reset, a
 * connect that fails or no reply at all in the window; 2 on bad arguments or
 * when it cannot raise its file descriptor limit to CONNECTIONS + 16.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    int connected;        /* burst mode: the handshake is done */
    size_t got;           /* bytes of the current reply received */
    double sent;          /* when the line now in flight was sent */
    double first;         /* burst mode: seconds to the first reply, -1 before */
    unsigned char *buf;   /* size + 1 bytes: one more than a reply, to see excess */
};

static size_t size = 32;
static unsigned char line[4096], expect[4096];

/* A growing array of doubles: the latency samples of the window. */
struct samples { double *v; size_t n, cap; };

static void push(struct samples *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) { perror("realloc"); exit(1); }
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n-1]; 0 when empty. */
static double pct(const double *v, size_t n, double p) {
    if (n == 0) return 0;
    size_t k = (size_t)(p * n + 0.999999);
    return v[k == 0 ? 0 : (k > n ? n - 1 : k - 1)];
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_line(struct conn *c, double t) {
    size_t off = 0;
    c->sent = t;
    while (off < size) {
        ssize_t n = send(c->fd, line + off, size - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("send");  /* a line always fits an empty socket buffer */
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* One recv: 1 when the whole reply is in and right, 0 for more to come
 * (level-triggered epoll reports the rest), -1 on an error or a wrong
 * reply. */
static int on_readable(struct conn *c) {
    ssize_t n;
    do n = recv(c->fd, c->buf + c->got, size + 1 - c->got, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        perror("recv");
        return -1;
    }
    if (n == 0) {
        fprintf(stderr, "the server closed a connection\n");
        return -1;
    }
    c->got += (size_t)n;
    if (c->got > size) {
        fprintf(stderr, "wrong reply: more bytes than were sent\n");
        return -1;
    }
    if (c->got < size) return 0;
    if (memcmp(c->buf, expect, size) != 0) {
        fprintf(stderr, "wrong reply: %.*s\n", (int)size - 1, c->buf);
        return -1;
    }
    c->got = 0;
    return 1;
}

static int new_socket(int family, int flags) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Default mode: connect, one blocking round trip, then non-blocking. */
static int connect_one(struct conn *c, const struct sockaddr *addr, socklen_t len, int family) {
    int fd = new_socket(family, 0);
    if (fd < 0) return -1;
    c->fd = fd;
    /* A server that never answers fails the run instead of hanging it. */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, addr, len) < 0) { perror("connect"); return -1; }
    if (send_line(c, now()) < 0) return -1;
    while (c->got < size) {
        ssize_t n = recv(fd, c->buf + c->got, size - c->got, 0);
        if (n <= 0) {
            fprintf(stderr, "no reply to the first line: %s\n", n == 0 ? "the server closed the connection"
                    : errno == EAGAIN || errno == EWOULDBLOCK ? "none within 10 s" : strerror(errno));
            return -1;
        }
        c->got += (size_t)n;
    }
    if (memcmp(c->buf, expect, size) != 0) {
        fprintf(stderr, "wrong reply: %.*s\n", (int)size - 1, c->buf);
        return -1;
    }
    c->got = 0;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) { perror("fcntl"); return -1; }
    return 0;
}

/* Burst mode: start every connect, then wait (up to 60 s) until all are
 * established.  Returns the number that failed or never completed, having
 * said why. */
static int connect_all(struct conn *conns, int nconns, int ep, const struct sockaddr *addr,
                       socklen_t len, int family) {
    int pending = 0;
    for (int i = 0; i < nconns; i++) {
        int fd = new_socket(family, SOCK_NONBLOCK);
        if (fd < 0) return nconns - i;
        conns[i].fd = fd;
        if (connect(fd, addr, len) == 0) {
            conns[i].connected = 1;
        } else if (errno != EINPROGRESS) {
            fprintf(stderr, "connect %d of %d: %s\n", i + 1, nconns, strerror(errno));
            return nconns - i;
        } else {
            pending++;
        }
        struct epoll_event ev = {.events = conns[i].connected ? EPOLLIN : EPOLLOUT, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll_ctl"); return nconns - i; }
    }
    struct epoll_event events[1024];
    double deadline = now() + 60;
    while (pending > 0) {
        if (now() > deadline) {
            fprintf(stderr, "%d of %d connections not established after 60 s\n", pending, nconns);
            return pending;
        }
        int n = epoll_wait(ep, events, 1024, 100);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return pending; }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            int err = 0;
            socklen_t elen = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) err = errno;
            if (err != 0) {
                fprintf(stderr, "connect: %s\n", strerror(err));
                return pending;
            }
            c->connected = 1;
            pending--;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) { perror("epoll_ctl"); return pending; }
        }
    }
    return 0;
}

/* Room for CONNECTIONS descriptors and a few more, or exit 2 saying so. */
static void raise_nofile(int nconns) {
    struct rlimit rl;
    rlim_t need = (rlim_t)nconns + 16;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) { perror("getrlimit"); exit(2); }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit want = {need, rl.rlim_max};
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) want.rlim_max = need;
        if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
            fprintf(stderr, "upper_client: %d connections need %lu file descriptors but RLIMIT_NOFILE is "
                    "%lu (hard limit %lu) and cannot be raised: raise it (ulimit -n) or use fewer\n",
                    nconns, (unsigned long)need, (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
            exit(2);
        }
    }
}

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s [-b] [-H] [-s SIZE] HOST PORT CONNECTIONS WARMUP_S SECONDS [SIZE]\n", argv0);
    exit(2);
}

int main(int argc, char **argv) {
    int burst = 0, hold = 0, opt;
    while ((opt = getopt(argc, argv, "+bHs:")) != -1) {
        if (opt == 'b') burst = 1;
        else if (opt == 'H') hold = 1;
        else if (opt == 's') size = (size_t)atoi(optarg);
        else usage(argv[0]);
    }
    argc -= optind - 1;
    argv += optind - 1;
    if (argc < 6 || argc > 7) usage(argv[0]);
    const char *host = argv[1], *port = argv[2];
    int nconns = atoi(argv[3]);
    double warmup = atof(argv[4]), seconds = atof(argv[5]);
    if (argc > 6) size = (size_t)atoi(argv[6]);
    if (nconns < 1 || seconds <= 0 || warmup < 0 || size < 2 || size > sizeof line) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    raise_nofile(nconns);
    /* Lower-case letters and digits, newline-terminated: the reply is the
     * letters upper-cased. */
    const char *alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < size - 1; i++) line[i] = (unsigned char)alphabet[i % 36];
    line[size - 1] = '\n';
    for (size_t i = 0; i < size; i++)
        expect[i] = (line[i] >= 'a' && line[i] <= 'z') ? (unsigned char)(line[i] - 32) : line[i];

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) { fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(rc)); return 2; }
    struct sockaddr_storage addr;
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    socklen_t addrlen = ai->ai_addrlen;
    int family = ai->ai_family;
    freeaddrinfo(ai);

    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    unsigned char *bufs = calloc((size_t)nconns, size + 1);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !bufs || ep < 0) { perror("setup"); return 1; }
    for (int i = 0; i < nconns; i++) {
        conns[i].buf = bufs + (size_t)i * (size + 1);
        conns[i].first = -1;
    }

    double t0 = now(), connect_s = 0;
    if (burst) {
        if (connect_all(conns, nconns, ep, (struct sockaddr *)&addr, addrlen, family) != 0) return 1;
        /* Every connection is established: the first line on all at once,
         * each first reply timed from this moment. */
        connect_s = now() - t0;
        t0 = now();
        for (int i = 0; i < nconns; i++)
            if (send_line(&conns[i], t0) < 0) return 1;
    } else {
        for (int i = 0; i < nconns; i++) {
            if (connect_one(&conns[i], (struct sockaddr *)&addr, addrlen, family) < 0) return 1;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) { perror("epoll_ctl"); return 1; }
            if (send_line(&conns[i], now()) < 0) return 1;
        }
        t0 = now();
    }

    struct epoll_event events[1024];
    struct samples lat = {0};
    double start = t0 + warmup, end = start + seconds, opened = 0;
    int measuring = 0, firsts = 0;
    long long requests = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= start) {
            printf("mark start\n");
            fflush(stdout);
            measuring = 1;
            opened = now();
        }
        if (measuring && t >= end) break;
        int n = epoll_wait(ep, events, 1024, 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        t = now();
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            int r = on_readable(c);
            if (r < 0) return 1;
            if (r == 0) continue;
            if (c->first < 0 && burst) {
                c->first = t - t0;
                firsts++;
            }
            if (measuring) {
                requests++;
                push(&lat, (t - c->sent) * 1e6);
            }
            if (send_line(c, t) < 0) return 1;
        }
    }
    double closed = now();
    printf("mark end\n");
    fflush(stdout);
    double elapsed = closed - opened;
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_double);
    printf("result requests=%lld seconds=%.3f rps=%.0f errors=0 connections=%d "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f",
           requests, elapsed, requests / elapsed, nconns, pct(lat.v, lat.n, 0.50),
           pct(lat.v, lat.n, 0.90), pct(lat.v, lat.n, 0.99), lat.n ? lat.v[lat.n - 1] : 0.0);
    if (burst) {
        double *f = malloc(((size_t)firsts + 1) * sizeof *f);
        if (!f) { perror("malloc"); return 1; }
        size_t k = 0;
        for (int i = 0; i < nconns; i++)
            if (conns[i].first >= 0) f[k++] = conns[i].first;
        qsort(f, k, sizeof *f, cmp_double);
        printf(" connect_s=%.3f first_got=%d first_missing=%d first_p99_s=%.4f first_max_s=%.4f",
               connect_s, firsts, nconns - firsts, pct(f, k, 0.99), k ? f[k - 1] : 0.0);
        free(f);
    }
    printf("\n");
    fflush(stdout);
    if (hold) {
        char drain[256];
        while (read(0, drain, sizeof drain) > 0) {}
    }
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    if (requests == 0) {
        fprintf(stderr, "no reply at all in the window\n");
        return 1;
    }
    return 0;
}
