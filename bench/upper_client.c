/*
 * A closed-loop load client for the seed's upper-casing protocol, in C so
 * that its own cost is small and fixed and the server's CPU figures are the
 * server's.  One OS thread, epoll (level-triggered), N connections, each with
 * one SIZE-byte line in flight; every reply is checked against the line
 * upper-cased.
 *
 *   cc -O2 -o upper_client bench/upper_client.c
 *   ./upper_client HOST PORT CONNECTIONS WARMUP_S SECONDS [SIZE]
 *
 * Prints "mark start" (flushed) when the measured window opens and
 * "mark end" when it closes, so a driver can read the server's CPU time at
 * both; then one line of results:
 *
 *   result requests=N seconds=S rps=R errors=E connections=C
 *
 * Exits 1 on a wrong reply, a connection closed or refused, or no reply at
 * all in the window; 2 on bad arguments.  Connects one connection at a time
 * (a round trip on each before opening the next) so a small listen backlog
 * never drops a handshake.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t got;           /* bytes of the current reply received */
    unsigned char buf[4096];
};

static size_t size = 32;
static unsigned char line[4096], expect[4096];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_line(int fd) {
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, line + off, size - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;  /* a 32-byte line always fits an empty buffer */
        }
        off += (size_t)n;
    }
    return 0;
}

/* Read what is there; 1 when a whole reply is in and right, 0 for more to
 * come, -1 on an error or a wrong reply. */
static int on_readable(struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
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
            fprintf(stderr, "more bytes than were sent\n");
            return -1;
        }
        if (c->got == size) {
            if (memcmp(c->buf, expect, size) != 0) {
                fprintf(stderr, "wrong reply: %.*s\n", (int)size, c->buf);
                return -1;
            }
            c->got = 0;
            return 1;
        }
    }
}

static int connect_one(struct sockaddr_storage *addr, socklen_t len, int family) {
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)addr, len) < 0) { perror("connect"); close(fd); return -1; }
    /* One blocking round trip, then non-blocking. */
    struct conn tmp = {.fd = fd};
    if (send_line(fd) < 0) { perror("send"); close(fd); return -1; }
    while (tmp.got < size) {
        ssize_t n = recv(fd, tmp.buf + tmp.got, size - tmp.got, 0);
        if (n <= 0) { fprintf(stderr, "no reply to the first line\n"); close(fd); return -1; }
        tmp.got += (size_t)n;
    }
    if (memcmp(tmp.buf, expect, size) != 0) { fprintf(stderr, "wrong first reply\n"); close(fd); return -1; }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) { perror("fcntl"); close(fd); return -1; }
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS WARMUP_S SECONDS [SIZE]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    int nconns = atoi(argv[3]);
    double warmup = atof(argv[4]), seconds = atof(argv[5]);
    if (argc > 6) size = (size_t)atoi(argv[6]);
    if (nconns < 1 || seconds <= 0 || warmup < 0 || size < 2 || size > sizeof line) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
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
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) { perror("setup"); return 1; }
    for (int i = 0; i < nconns; i++) {
        int fd = connect_one(&addr, addrlen, family);
        if (fd < 0) return 1;
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll_ctl"); return 1; }
        if (send_line(fd) < 0) { perror("send"); return 1; }
    }

    struct epoll_event events[1024];
    double t0 = now(), start = t0 + warmup, end = start + seconds;
    int measuring = 0;
    long long requests = 0;
    double opened = 0;
    if (warmup == 0) { printf("mark start\n"); fflush(stdout); measuring = 1; opened = now(); }
    for (;;) {
        double t = now();
        if (!measuring && t >= start) {
            printf("mark start\n");
            fflush(stdout);
            measuring = 1;
            opened = now();
            requests = 0;
        }
        if (measuring && t >= end) break;
        int n = epoll_wait(ep, events, 1024, 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            int r = on_readable(c);
            if (r < 0) return 1;
            if (r == 1) {
                requests++;
                if (send_line(c->fd) < 0) { perror("send"); return 1; }
            }
        }
    }
    double closed = now();
    printf("mark end\n");
    fflush(stdout);
    double elapsed = closed - opened;
    printf("result requests=%lld seconds=%.3f rps=%.0f errors=0 connections=%d\n",
           requests, elapsed, requests / elapsed, nconns);
    fflush(stdout);
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    return requests > 0 ? 0 : 1;
}
