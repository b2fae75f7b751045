/*
 * cps.c - new-TCP-connection rate tool for bench/bench_agent.py (built at run time with gcc).
 *
 *   cps serve  IP PORT                          accept and close, until killed
 *   cps storm  IP PORT SECS MAXCONN RATE [SRC]  connect loop; RATE 0 = as fast as possible, else
 *                                               paced to RATE connections/s; SRC = source address
 *   cps probe  IP PORT TIMEOUT_MS [SRC]         one attempt: prints connected, refused or timeout
 *
 * Each connection of a storm is a full handshake (the server's input hook sees the SYN as a new
 * flow, then the ACK of an established one) closed with an RST (SO_LINGER 0), so neither side keeps
 * TIME_WAIT sockets and a storm does not run out of ports. connect() time (SYN sent to SYN-ACK
 * handled) is kept per connection; the storm ends after SECS seconds or MAXCONN connections and
 * prints one JSON line: conns, errors, secs, cps, p50/p99/max of connect() in microseconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_until(double when) {
    struct timespec t;
    t.tv_sec = (time_t)when;
    t.tv_nsec = (long)((when - (double)t.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
    }
}

static int parse_addr(const char *ip, int port, struct sockaddr_in *out) {
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((unsigned short)port);
    return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -1;
}

/* A TCP socket, bound to `src` when given; RST on close. */
static int tcp_socket(const struct sockaddr_in *src) {
    struct linger abortive = {1, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
    if (src && bind(fd, (const struct sockaddr *)src, sizeof *src) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int serve(const struct sockaddr_in *at) {
    int yes = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (bind(fd, (const struct sockaddr *)at, sizeof *at) != 0 || listen(fd, 4096) != 0) {
        perror("serve");
        return 1;
    }
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) close(c);
    }
}

static int by_value(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int storm(const struct sockaddr_in *to, const struct sockaddr_in *src, double secs, long maxconn,
                 double rate) {
    float *lat = calloc((size_t)maxconn, sizeof *lat);
    long done = 0, errors = 0;
    if (!lat) return 1;
    double start = mono(), end = start + secs, now = start;
    while (done < maxconn && now < end) {
        if (rate > 0) sleep_until(start + (double)(done + errors) / rate);
        int fd = tcp_socket(src);
        if (fd < 0) {
            errors++;
            now = mono();
            continue;
        }
        double t0 = mono();
        int ok = connect(fd, (const struct sockaddr *)to, sizeof *to) == 0;
        now = mono();
        if (ok)
            lat[done++] = (float)((now - t0) * 1e6);
        else
            errors++;
        close(fd);
    }
    double took = mono() - start;
    qsort(lat, (size_t)done, sizeof *lat, by_value);
    printf("{\"conns\": %ld, \"errors\": %ld, \"secs\": %.4f, \"cps\": %.1f, \"connect_p50_us\": %.2f, "
           "\"connect_p99_us\": %.2f, \"connect_max_us\": %.2f}\n",
           done, errors, took, (double)done / took, done ? lat[done / 2] : 0.0,
           done ? lat[(long)((double)done * 0.99)] : 0.0, done ? lat[done - 1] : 0.0);
    free(lat);
    return 0;
}

static const char *probe(const struct sockaddr_in *to, const struct sockaddr_in *src, int timeout_ms) {
    int fd = tcp_socket(src), err = 0;
    socklen_t len = sizeof err;
    if (fd < 0) return "error";
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) != 0) {
        if (errno != EINPROGRESS) err = errno;
        else {
            struct pollfd p = {fd, POLLOUT, 0};
            if (poll(&p, 1, timeout_ms) == 0) {
                close(fd);
                return "timeout";
            }
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        }
    }
    close(fd);
    return err == 0 ? "connected" : err == ECONNREFUSED ? "refused" : "error";
}

int main(int argc, char **argv) {
    struct sockaddr_in to, src;
    const struct sockaddr_in *from = NULL;
    if (argc < 4 || parse_addr(argv[2], atoi(argv[3]), &to) != 0) goto usage;
    if (!strcmp(argv[1], "serve")) return serve(&to);
    if (!strcmp(argv[1], "storm") && argc >= 7) {
        if (argc >= 8) {
            if (parse_addr(argv[7], 0, &src) != 0) goto usage;
            from = &src;
        }
        return storm(&to, from, atof(argv[4]), atol(argv[5]), atof(argv[6]));
    }
    if (!strcmp(argv[1], "probe") && argc >= 5) {
        if (argc >= 6) {
            if (parse_addr(argv[5], 0, &src) != 0) goto usage;
            from = &src;
        }
        puts(probe(&to, from, atoi(argv[4])));
        return 0;
    }
usage:
    fprintf(stderr, "usage: cps serve IP PORT | storm IP PORT SECS MAXCONN RATE [SRC] | "
                    "probe IP PORT TIMEOUT_MS [SRC]\n");
    return 2;
}
