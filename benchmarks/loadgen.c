/*
 * loadgen.c - the echo benchmark's load generator (built by `make bench`).
 *
 * Written in C so that the load generator is not the bottleneck when it
 * drives a Python server from the other core: one thread, one epoll set.
 *
 *   loadgen -p PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-w WARMUP]
 *       ping-pong: every connection sends SIZE bytes, waits until all of
 *       them came back (checked byte for byte), records the round-trip time
 *       and sends the next message.  Prints "measuring" when the warm-up
 *       ends and "done" when the measured window ends (each on its own
 *       line, flushed, so the harness can sample server CPU at both), then
 *       one JSON line of results.
 *
 *   loadgen -p PORT -m openloop -r RATE [-c CONNS] [-s SIZE] [-d SECONDS] [-w WARMUP]
 *       open loop, as `python -m echotwist.bench --rate RATE` runs it: send n
 *       is due at start + n / RATE, on connection n mod CONNS, one message in
 *       flight per connection; a send due while its connection waits for an
 *       echo is held until the echo is back (at most 1024 per connection;
 *       beyond, it is dropped and counted in "overflow", and the exit status
 *       is 1).  The loop never sleeps: it polls with a zero timeout and checks
 *       for due sends after every echo, so its schedule delay (a send made
 *       when reached: when it left; a held one: when the loop reached it;
 *       minus when it was due) is the least this machine leaves a generator
 *       that spins on its own CPU and does little per message.  Prints
 *       "measuring" and "done" as ping-pong does, then one JSON line: the
 *       sends made and held while measuring, the echoes, the schedule
 *       delay's percentiles, the send delay's (actual minus intended send)
 *       and the latency's from the intended send.
 *
 *   loadgen -p PORT -m idle [-c CONNS] [-H HOLD]
 *       opens CONNS connections (at most 256 connecting at once), echoes
 *       16 bytes on each, prints one JSON line, then holds them open until
 *       standard input closes or HOLD seconds pass.
 *
 * Loopback only: the host is always 127.0.0.1.  Every phase is bounded in
 * time; exit status 1 when anything failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES (8u << 20)

struct conn {
    int fd;
    size_t sent;     /* bytes of the current message written */
    size_t received; /* bytes of the current message read back */
    size_t offset;   /* where the current message starts in the pattern */
    uint64_t startNs;
    uint64_t intendedNs; /* open loop: when the message in flight was due */
    int done;
};

static unsigned char *pattern;
static size_t patternSize;
static uint32_t *samples;
static size_t sampleCount;

static uint64_t nowNs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int connectTo(int port, int blocking) {
    int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void raiseFileLimit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int cmpU32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0 to 1) of COUNT sorted VALUES in ns, in us. */
static double quantileUs(const uint32_t *values, size_t count, double q) {
    if (count == 0) return 0.0;
    return values[(size_t)(q * (double)(count - 1))] / 1000.0;
}

/* Write what remains of the current message; 0 on success, -1 on error. */
static int pump(struct conn *c, size_t size) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, pattern + c->offset + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->sent += (size_t)n;
    }
    return 0;
}

static void nextMessage(struct conn *c, size_t size, uint64_t seq) {
    c->sent = 0;
    c->received = 0;
    c->offset = (size_t)((seq * 2654435761u) % (patternSize - size));
    c->startNs = nowNs();
}

static void announce(const char *line) {
    printf("%s\n", line);
    fflush(stdout);
}

static uint32_t clampNs(uint64_t ns) { return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns; }

static void record(uint32_t *to, size_t *count, uint64_t ns) {
    if (*count < MAX_SAMPLES) to[(*count)++] = clampNs(ns);
}

/* The measured window: SECONDS after WARMUP seconds from NOW. */
struct window {
    uint64_t from, to;
    int measuring;
};

static struct window windowFrom(uint64_t now, double warmup, double seconds) {
    uint64_t from = now + (uint64_t)(warmup * 1e9);
    return (struct window){.from = from, .to = from + (uint64_t)(seconds * 1e9)};
}

/* Whether the window is over at T; says "measuring" once, as it starts. */
static int windowOver(struct window *w, uint64_t t) {
    if (!w->measuring && t >= w->from) {
        w->measuring = 1;
        announce("measuring");
    }
    return t >= w->to;
}

/* Count an error on C and stop using it. */
static void drop(struct conn *c, uint64_t *errors) {
    (*errors)++;
    c->done = 1;
}

/* Connect CONNS sockets (blocking, then non-blocking), each in the epoll set. */
static void connectAll(int ep, struct conn *cs, int conns, int port) {
    for (int i = 0; i < conns; i++) {
        cs[i].fd = connectTo(port, 1);
        if (cs[i].fd < 0) die("connect");
        if (fcntl(cs[i].fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
    }
}

/* Read more of the current message's echo and check it byte for byte: 1 when
 * bytes came, 0 when none were there, -1 on an error, the end or wrong bytes. */
static int receive(struct conn *c, unsigned char *buf, size_t size) {
    ssize_t got = recv(c->fd, buf, size - c->received, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (got <= 0) return -1;
    if (c->received + (size_t)got > c->sent ||
        memcmp(buf, pattern + c->offset + c->received, (size_t)got) != 0) {
        fprintf(stderr, "loadgen: wrong bytes echoed\n");
        return -1;
    }
    c->received += (size_t)got;
    return 1;
}

static int pingpong(int port, int conns, size_t size, double seconds, double warmup) {
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    unsigned char *buf = malloc(size < 65536 ? 65536 : size);
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (ep < 0 || !cs || !buf || !samples) die("setup");
    uint64_t seq = 1;
    connectAll(ep, cs, conns, port);
    for (int i = 0; i < conns; i++) nextMessage(&cs[i], size, seq++);
    struct window w = windowFrom(nowNs(), warmup, seconds);
    uint64_t echoes = 0, errors = 0;
    struct epoll_event events[256];
    for (int i = 0; i < conns; i++)
        if (pump(&cs[i], size) < 0) errors++;
    for (;;) {
        if (windowOver(&w, nowNs())) break;
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &cs[events[e].data.u32];
            if (c->done) continue;
            if (pump(c, size) < 0) {
                drop(c, &errors);
                continue;
            }
            for (;;) {
                int got = receive(c, buf, size);
                if (got < 0) {
                    drop(c, &errors);
                    break;
                }
                if (got == 0) break;
                if (c->received == size) {
                    uint64_t end = nowNs();
                    if (w.measuring && end < w.to) {
                        echoes++;
                        record(samples, &sampleCount, end - c->startNs);
                    }
                    nextMessage(c, size, seq++);
                    if (pump(c, size) < 0) {
                        drop(c, &errors);
                        break;
                    }
                }
            }
        }
    }
    announce("done");
    qsort(samples, sampleCount, sizeof *samples, cmpU32);
    printf("{\"mode\":\"pingpong\",\"conns\":%d,\"size\":%zu,\"seconds\":%.3f,\"echoes\":%llu,"
           "\"echoes_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
           conns, size, seconds, (unsigned long long)echoes, echoes / seconds, quantileUs(samples, sampleCount, 0.50),
           quantileUs(samples, sampleCount, 0.99), (unsigned long long)errors);
    for (int i = 0; i < conns; i++) close(cs[i].fd);
    return errors ? 1 : 0;
}

/* Open loop: the sends held per connection (a ring of HELD_MAX, one second
 * of sends at 50 connections and 50,000/s; a send due when its connection's
 * ring is full is dropped and counted as "overflow"), with the times they were
 * due and reached, in ns. */
#define HELD_MAX 1024u

struct held {
    uint64_t intended[HELD_MAX];
    uint64_t reached[HELD_MAX];
    unsigned head, count;
};

static uint32_t *scheduleSamples, *sendSamples;
static size_t scheduleCount, sendCount;

/* Send the message due at INTENDED on C.  REACHED: when the schedule reached
 * it, if it was then held; 0 for a send made when reached (its schedule delay
 * is then its send delay, as the bench's SendDelays has it). */
static int sendDue(struct conn *c, size_t size, uint64_t seq, uint64_t intended, uint64_t reached,
                   int measuring) {
    nextMessage(c, size, seq);
    uint64_t sent = c->startNs;
    c->intendedNs = intended;
    if (measuring) {
        record(scheduleSamples, &scheduleCount, (reached ? reached : sent) - intended);
        record(sendSamples, &sendCount, sent - intended);
    }
    return pump(c, size);
}

static int openloop(int port, int conns, size_t size, double seconds, double warmup, double rate) {
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    struct held *hs = calloc((size_t)conns, sizeof *hs);
    unsigned char *buf = malloc(size < 65536 ? 65536 : size);
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    scheduleSamples = malloc(MAX_SAMPLES * sizeof *scheduleSamples);
    sendSamples = malloc(MAX_SAMPLES * sizeof *sendSamples);
    if (ep < 0 || !cs || !hs || !buf || !samples || !scheduleSamples || !sendSamples) die("setup");
    connectAll(ep, cs, conns, port);
    for (int i = 0; i < conns; i++) cs[i].received = cs[i].sent = size; /* nothing in flight */
    uint64_t start = nowNs();
    struct window w = windowFrom(start, warmup, seconds);
    /* held: the held sends that left while measuring (the bench's held_sends). */
    uint64_t next = 0, seq = 1, held = 0, echoes = 0, errors = 0, overflow = 0;
    struct epoll_event events[256];
    for (;;) {
        if (windowOver(&w, nowNs())) break;
        int n = epoll_wait(ep, events, 256, 0);
        /* One pass over the ready sockets, then (e == n) the due check alone. */
        for (int e = 0; e <= n; e++) {
            if (e < n) {
                struct conn *c = &cs[events[e].data.u32];
                struct held *h = &hs[events[e].data.u32];
                if (c->done) continue;
                if (pump(c, size) < 0) {
                    drop(c, &errors);
                    continue;
                }
                while (c->received < size) {
                    int got = receive(c, buf, size);
                    if (got < 0) {
                        drop(c, &errors);
                        break;
                    }
                    if (got == 0) break;
                    if (c->received < size) continue;
                    uint64_t end = nowNs();
                    if (w.measuring) {
                        echoes++;
                        record(samples, &sampleCount, end - c->intendedNs);
                    }
                    if (h->count) {
                        uint64_t intended = h->intended[h->head], reached = h->reached[h->head];
                        h->head = (h->head + 1) % HELD_MAX;
                        h->count--;
                        held += (uint64_t)w.measuring;
                        if (sendDue(c, size, seq++, intended, reached, w.measuring) < 0) {
                            drop(c, &errors);
                        }
                    }
                }
            }
            /* The sends due by now (the clock read after this echo's work). */
            uint64_t now = nowNs();
            uint64_t last = (uint64_t)((double)(now - start) * rate / 1e9);
            for (; next <= last; next++) {
                uint64_t intended = start + (uint64_t)((double)next * 1e9 / rate);
                int i = (int)(next % (uint64_t)conns);
                struct conn *c = &cs[i];
                struct held *h = &hs[i];
                if (c->done) continue;
                if (c->received < size || h->count) {
                    if (h->count == HELD_MAX) {
                        overflow += (uint64_t)w.measuring;
                        continue;
                    }
                    h->intended[(h->head + h->count) % HELD_MAX] = intended;
                    h->reached[(h->head + h->count) % HELD_MAX] = nowNs();
                    h->count++;
                } else if (sendDue(c, size, seq++, intended, 0, w.measuring) < 0) {
                    drop(c, &errors);
                }
            }
        }
    }
    announce("done");
    qsort(samples, sampleCount, sizeof *samples, cmpU32);
    qsort(scheduleSamples, scheduleCount, sizeof *scheduleSamples, cmpU32);
    qsort(sendSamples, sendCount, sizeof *sendSamples, cmpU32);
    printf("{\"mode\":\"openloop\",\"conns\":%d,\"size\":%zu,\"seconds\":%.3f,\"rate\":%.1f,"
           "\"sent\":%zu,\"held\":%llu,\"overflow\":%llu,\"echoes\":%llu,\"echoes_per_s\":%.1f,"
           "\"schedule_delay\":{\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
           "\"max_us\":%.1f},\"send_delay\":{\"p50_us\":%.1f,\"p99_us\":%.1f},"
           "\"latency\":{\"p50_us\":%.1f,\"p99_us\":%.1f},\"errors\":%llu}\n",
           conns, size, seconds, rate, sendCount, (unsigned long long)held,
           (unsigned long long)overflow, (unsigned long long)echoes, (double)echoes / seconds,
           quantileUs(scheduleSamples, scheduleCount, 0.50),
           quantileUs(scheduleSamples, scheduleCount, 0.90),
           quantileUs(scheduleSamples, scheduleCount, 0.99),
           quantileUs(scheduleSamples, scheduleCount, 0.999),
           quantileUs(scheduleSamples, scheduleCount, 1.0),
           quantileUs(sendSamples, sendCount, 0.50), quantileUs(sendSamples, sendCount, 0.99),
           quantileUs(samples, sampleCount, 0.50), quantileUs(samples, sampleCount, 0.99),
           (unsigned long long)errors);
    for (int i = 0; i < conns; i++) close(cs[i].fd);
    return (errors || overflow) ? 1 : 0;
}

static int idle(int port, int conns, double hold) {
    const size_t size = 16;
    const int maxConnecting = 256;
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    if (ep < 0 || !cs) die("setup");
    int opened = 0, settled = 0, inFlight = 0;
    uint64_t errors = 0;
    uint64_t deadline = nowNs() + 60ull * 1000000000u;
    unsigned char buf[64];
    struct epoll_event events[256];
    while (settled < conns) {
        while (opened < conns && inFlight < maxConnecting) {
            struct conn *c = &cs[opened];
            c->fd = connectTo(port, 0);
            if (c->fd < 0) die("connect");
            c->offset = (size_t)opened % (patternSize - size);
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)opened};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
            opened++;
            inFlight++;
        }
        if (nowNs() > deadline) {
            fprintf(stderr, "loadgen: connections not set up within 60 s\n");
            return 1;
        }
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &cs[events[e].data.u32];
            if (c->done) continue;
            int failed = 0;
            if (c->sent < size) {
                ssize_t w = send(c->fd, pattern + c->offset, size, MSG_NOSIGNAL);
                if (w == (ssize_t)size) {
                    c->sent = size;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = events[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                } else if (!(w < 0 && (errno == EAGAIN || errno == ENOTCONN))) {
                    failed = 1;
                }
            } else {
                ssize_t got = recv(c->fd, buf, size - c->received, 0);
                if (got > 0 && memcmp(buf, pattern + c->offset + c->received, (size_t)got) == 0) {
                    c->received += (size_t)got;
                } else if (!(got < 0 && errno == EAGAIN)) {
                    failed = 1;
                }
            }
            if (failed || c->received == size) {
                errors += (uint64_t)failed;
                c->done = 1;
                settled++;
                inFlight--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    printf("{\"mode\":\"idle\",\"conns\":%d,\"established\":%llu,\"errors\":%llu}\n", conns,
           (unsigned long long)(conns - (int)errors), (unsigned long long)errors);
    fflush(stdout);
    struct pollfd in = {.fd = 0, .events = POLLIN};
    uint64_t until = nowNs() + (uint64_t)(hold * 1e9);
    while (nowNs() < until) {
        if (poll(&in, 1, 100) > 0 && read(0, buf, sizeof buf) <= 0) break;
    }
    for (int i = 0; i < conns; i++) close(cs[i].fd);
    return errors ? 1 : 0;
}

int main(int argc, char **argv) {
    int port = 0, conns = 1, opt;
    size_t size = 64;
    double seconds = 3.0, warmup = 1.0, hold = 60.0, rate = 0.0;
    const char *mode = "pingpong";
    while ((opt = getopt(argc, argv, "p:c:s:d:w:m:H:r:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 's': size = (size_t)strtoul(optarg, NULL, 10); break;
        case 'd': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'm': mode = optarg; break;
        case 'H': hold = atof(optarg); break;
        case 'r': rate = atof(optarg); break;
        default: port = 0;
        }
    }
    /* Written as "within" tests, so that NaN is refused too. */
    int openLoop = strcmp(mode, "openloop") == 0;
    if (port <= 0 || port > 65535 || conns < 1 || conns > 100000 || size < 1 || size > (1u << 24) ||
        !(seconds > 0 && seconds <= 600) || !(warmup >= 0 && warmup <= 600) ||
        !(hold >= 0 && hold <= 3600) || !(rate >= 0 && rate <= 1e7) ||
        (openLoop && !(rate > 0 && rate * seconds <= MAX_SAMPLES))) {
        fprintf(stderr, "usage: loadgen -p PORT [-m pingpong|openloop|idle] [-c CONNS] [-s BYTES] "
                        "[-d SECONDS] [-w WARMUP] [-H HOLD] [-r RATE]\n"
                        "  (openloop: RATE x SECONDS at most %u sends measured)\n",
                MAX_SAMPLES);
        return 2;
    }
    raiseFileLimit();
    patternSize = (1u << 20) + size + 1;
    pattern = malloc(patternSize);
    if (!pattern) die("malloc");
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < patternSize; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pattern[i] = (unsigned char)x;
    }
    if (strcmp(mode, "idle") == 0) return idle(port, conns, hold);
    if (strcmp(mode, "pingpong") == 0) return pingpong(port, conns, size, seconds, warmup);
    if (strcmp(mode, "openloop") == 0) return openloop(port, conns, size, seconds, warmup, rate);
    fprintf(stderr, "loadgen: unknown mode %s\n", mode);
    return 2;
}
