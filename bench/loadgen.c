/*
 * loadgen: paced statsd/DogStatsD UDP load generator for loopback benchmarks.
 *
 * Build:  gcc -O2 -o bench/.build/loadgen bench/loadgen.c
 *
 * All datagrams are rendered into a ring before the clock starts, so the send
 * loop does nothing but pace and call sendmmsg(2) on ring slices.  The send
 * schedule is fixed (datagram n is due at start + n / datagram_rate) and the
 * run ends at the duration even if the schedule is not done; when the
 * generator falls behind it catches up in bounded batches and the report shows
 * the achieved rate, so a run never silently offers less than it claims.
 *
 * Only loopback targets (127.0.0.0/8, ::1) are accepted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DURATION_S 600.0
#define MAX_RATE 100e6          /* metrics/s; far above what one core can do */
#define MAX_SERIES 10000000L
#define MAX_PER_DGRAM 50
#define MAX_SOCKETS 64
#define MAX_LINE 128
#define RING_BYTES_CAP (64L << 20)
#define RING_MIN_DGRAMS 4096L
#define MAX_BATCH 64            /* bounds burst size when catching up */
#define SPIN_NS 100000L         /* below this gap we spin instead of sleeping */
#define QUANTUM_S 50e-6         /* wait until this much traffic is due, then send */
#define GRACE_S 0.02            /* late wakeups may finish the schedule this late */

enum mode { MODE_COUNTERS, MODE_MIX };

struct opts {
    const char *host;
    int port;
    double rate;
    double duration;
    int per_dgram;
    long series;
    enum mode mode;
    uint64_t seed;
    const char *report;
    int sockets;                /* source sockets, used in turn per sendmmsg */
    int untagged;               /* lines without the DogStatsD tags */
};

struct ring {
    long n;                     /* datagrams in the ring */
    char *buf;                  /* all datagram payloads back to back */
    struct iovec *iov;
    struct mmsghdr *msgs;
    uint32_t *counter_sum;      /* counter increments carried by each datagram */
};

struct errors {
    uint64_t eagain, enobufs, econnrefused, other;
};

struct result {
    uint64_t dgrams, metrics, counter_total, bytes, failed;
    struct errors err;
    double elapsed;
};

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --host 127.0.0.1 --port P --rate METRICS_PER_SEC\n"
            "               --duration SECS --per-datagram K --series N\n"
            "               --mode counters|mix --seed S [--sockets N]\n"
            "               [--report out.json] [--untagged]\n");
    exit(2);
}

static double parse_num(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v)) {
        fprintf(stderr, "loadgen: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

/* Non-negative integer no larger than max, so narrowing casts cannot wrap. */
static long long parse_int(const char *s, const char *what, long long max)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < 0 || v > max) {
        fprintf(stderr, "loadgen: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static void check_opts(const struct opts *o)
{
    if (o->port < 1 || o->port > 65535) die("--port must be 1..65535");
    if (o->rate <= 0 || o->rate > MAX_RATE) die("--rate must be in (0, 1e8]");
    if (o->duration <= 0 || o->duration > MAX_DURATION_S)
        die("--duration must be in (0, 600]");
    if (o->sockets < 1) die("--sockets must be 1..64");
    if (o->per_dgram < 1 || o->per_dgram > MAX_PER_DGRAM)
        die("--per-datagram must be 1..50");
    if (o->series < 1 || o->series > MAX_SERIES)
        die("--series must be 1..10000000");
}

static struct opts parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"rate", required_argument, 0, 'r'},
        {"duration", required_argument, 0, 'd'},
        {"per-datagram", required_argument, 0, 'k'},
        {"series", required_argument, 0, 'n'},
        {"mode", required_argument, 0, 'm'},
        {"seed", required_argument, 0, 's'},
        {"report", required_argument, 0, 'o'},
        {"sockets", required_argument, 0, 'S'},
        {"untagged", no_argument, 0, 'u'},
        {0, 0, 0, 0},
    };
    struct opts o = {"127.0.0.1", 0, 0, 0, 1, 1, MODE_COUNTERS, 1, NULL, 1, 0};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': o.host = optarg; break;
        case 'p': o.port = (int)parse_int(optarg, "port", 65535); break;
        case 'r': o.rate = parse_num(optarg, "rate"); break;
        case 'd': o.duration = parse_num(optarg, "duration"); break;
        case 'k': o.per_dgram = (int)parse_int(optarg, "per-datagram", MAX_PER_DGRAM); break;
        case 'n': o.series = (long)parse_int(optarg, "series", MAX_SERIES); break;
        case 's': o.seed = (uint64_t)parse_int(optarg, "seed", LLONG_MAX); break;
        case 'o': o.report = optarg; break;
        case 'S': o.sockets = (int)parse_int(optarg, "sockets", MAX_SOCKETS); break;
        case 'u': o.untagged = 1; break;
        case 'm':
            if (strcmp(optarg, "counters") == 0) o.mode = MODE_COUNTERS;
            else if (strcmp(optarg, "mix") == 0) o.mode = MODE_MIX;
            else die("--mode must be counters or mix");
            break;
        default: usage();
        }
    }
    if (optind != argc) usage();
    check_opts(&o);
    return o;
}

/* Resolves host to a loopback sockaddr; anything off-box is refused. */
static socklen_t loopback_addr(const char *host, int port,
                               struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    const char *h = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, h, &v4->sin_addr) == 1) {
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
            die("refusing non-loopback host (only 127.0.0.0/8 or ::1)");
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return sizeof(*v4);
    }
    if (inet_pton(AF_INET6, h, &v6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
            die("refusing non-loopback host (only 127.0.0.0/8 or ::1)");
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return sizeof(*v6);
    }
    die("--host must be a numeric loopback address or localhost");
    return 0;
}

static int open_socket(const struct opts *o)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback_addr(o->host, o->port, &ss);
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0) die("socket() failed");
    /* connect() pins the route once instead of per datagram */
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) die("connect() failed");
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    return fd;
}

/* Renders one statsd line into out; returns its length and adds to *csum. */
static int render_line(const struct opts *o, uint64_t *rng, char *out,
                       uint32_t *csum)
{
    long i = (long)(splitmix64(rng) % (uint64_t)o->series);
    char tags[32] = "";
    if (!o->untagged)
        snprintf(tags, sizeof(tags), "|#env:bench,shard:%d", (int)(i % 8));
    if (o->mode == MODE_COUNTERS) {
        *csum += 1;
        return snprintf(out, MAX_LINE, "bench.c%ld:1|c%s", i, tags);
    }
    /* mix: 50% counters, 25% timers, 15% gauges, 10% sets */
    uint64_t r = splitmix64(rng);
    unsigned pick = (unsigned)(r % 100);
    unsigned val = (unsigned)((r >> 8) % 1000);
    if (pick < 50) {
        unsigned inc = 1 + val % 5;
        *csum += inc;
        return snprintf(out, MAX_LINE, "bench.c%ld:%u|c%s", i, inc, tags);
    }
    if (pick < 75)
        return snprintf(out, MAX_LINE, "bench.t%ld:%u.%u|ms%s",
                        i, val, (unsigned)(r >> 20) % 10, tags);
    if (pick < 90)
        return snprintf(out, MAX_LINE, "bench.g%ld:%u|g%s", i, val, tags);
    return snprintf(out, MAX_LINE, "bench.s%ld:u%u|s%s",
                    i, (unsigned)((r >> 16) % 10000), tags);
}

/* Enough datagrams to touch every series at least once, within a byte cap. */
static long ring_size(const struct opts *o)
{
    long need = (o->series + o->per_dgram - 1) / o->per_dgram;
    long cap = RING_BYTES_CAP / ((long)o->per_dgram * MAX_LINE);
    long n = need > RING_MIN_DGRAMS ? need : RING_MIN_DGRAMS;
    return n < cap ? n : cap;
}

static struct ring build_ring(const struct opts *o)
{
    struct ring rg;
    rg.n = ring_size(o);
    size_t slot = (size_t)o->per_dgram * MAX_LINE;
    rg.buf = malloc((size_t)rg.n * slot);
    rg.iov = calloc((size_t)rg.n, sizeof(*rg.iov));
    rg.msgs = calloc((size_t)rg.n, sizeof(*rg.msgs));
    rg.counter_sum = calloc((size_t)rg.n, sizeof(*rg.counter_sum));
    if (!rg.buf || !rg.iov || !rg.msgs || !rg.counter_sum) die("out of memory");

    uint64_t rng = o->seed;
    char *p = rg.buf;
    for (long d = 0; d < rg.n; d++) {
        char *start = p;
        for (int k = 0; k < o->per_dgram; k++) {
            if (k > 0) *p++ = '\n';
            p += render_line(o, &rng, p, &rg.counter_sum[d]);
        }
        rg.iov[d].iov_base = start;
        rg.iov[d].iov_len = (size_t)(p - start);
        rg.msgs[d].msg_hdr.msg_iov = &rg.iov[d];
        rg.msgs[d].msg_hdr.msg_iovlen = 1;
    }
    return rg;
}

static void count_error(struct errors *e, int err)
{
    switch (err) {
    case EAGAIN: e->eagain++; break;
    case ENOBUFS: e->enobufs++; break;
    case ECONNREFUSED: e->econnrefused++; break;
    default: e->other++;
    }
}

/* Sleeps until just before deadline, then spins, so wakeups land on time. */
static void wait_until(double deadline)
{
    double gap = deadline - now_s();
    if (gap * 1e9 > 2 * SPIN_NS) {
        double wake = gap - SPIN_NS * 1e-9;
        struct timespec ts = {(time_t)wake, (long)((wake - (time_t)wake) * 1e9)};
        nanosleep(&ts, NULL);
    }
    while (now_s() < deadline)
        ;
}

static void account_sent(const struct ring *rg, long pos, int n,
                         struct result *res)
{
    for (int i = 0; i < n; i++) {
        res->counter_total += rg->counter_sum[pos + i];
        res->bytes += rg->iov[pos + i].iov_len;
    }
    res->dgrams += (uint64_t)n;
}

/* Several source sockets (distinct source ports) let SO_REUSEPORT receivers share the load: the
 * kernel picks a receiving socket per flow, and one socket is one flow. */
static struct result run(const struct opts *o, const int *fds, const struct ring *rg)
{
    struct result res;
    memset(&res, 0, sizeof(res));
    double dgram_rate = o->rate / o->per_dgram;
    /* rounded by hand: the build line does not link libm */
    uint64_t total = (uint64_t)(dgram_rate * o->duration + 0.5);
    uint64_t done = 0;          /* datagrams attempted, sent or failed */
    /* one sendmmsg per ~50us of traffic instead of per datagram: the syscall,
     * not the copy, is what limits small datagrams; 50us keeps it smooth */
    uint64_t quantum = (uint64_t)(dgram_rate * QUANTUM_S);
    if (quantum < 1) quantum = 1;
    if (quantum > MAX_BATCH) quantum = MAX_BATCH;
    long pos = 0;
    uint64_t batch = 0;         /* sendmmsg calls so far: picks the socket */
    double start = now_s();

    while (done < total) {
        double t = now_s() - start;
        /* fixed time as well as fixed count: a slow sender stops on time */
        if (t >= o->duration + GRACE_S) break;
        uint64_t due = (uint64_t)(t * dgram_rate) + 1;
        if (due > total) due = total;
        uint64_t goal = done + quantum < total ? done + quantum : total;
        if (due < goal) {
            wait_until(start + (double)(goal - 1) / dgram_rate);
            continue;
        }
        uint64_t want = due - done;
        if (want > MAX_BATCH) want = MAX_BATCH;
        if (want > (uint64_t)(rg->n - pos)) want = (uint64_t)(rg->n - pos);

        int fd = fds[batch++ % (uint64_t)o->sockets];
        int n = sendmmsg(fd, &rg->msgs[pos], (unsigned)want, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            /* drop the head datagram rather than retry: the schedule moves on */
            count_error(&res.err, errno);
            res.failed++;
            n = 1;
        } else {
            account_sent(rg, pos, n, &res);
        }
        done += (uint64_t)n;
        pos = (pos + n) % rg->n;
    }
    res.elapsed = now_s() - start;
    res.metrics = res.dgrams * (uint64_t)o->per_dgram;
    return res;
}

static void write_report(const struct opts *o, const struct ring *rg,
                         const struct result *r)
{
    FILE *f = o->report ? fopen(o->report, "w") : stdout;
    if (!f) die("cannot open --report file");
    double el = r->elapsed > 0 ? r->elapsed : 1e-9;
    fprintf(f,
            "{\n"
            "  \"host\": \"%s\", \"port\": %d, \"mode\": \"%s\",\n"
            "  \"per_datagram\": %d, \"series\": %ld, \"seed\": %llu,\n"
            "  \"target_metrics_per_sec\": %.1f, \"target_duration\": %.3f,\n"
            "  \"ring_datagrams\": %ld,\n"
            "  \"datagrams_sent\": %llu, \"metrics_sent\": %llu,\n"
            "  \"bytes_sent\": %llu, \"counter_total\": %llu,\n"
            "  \"elapsed\": %.6f,\n"
            "  \"achieved_metrics_per_sec\": %.1f,\n"
            "  \"achieved_datagrams_per_sec\": %.1f,\n"
            "  \"datagrams_failed\": %llu,\n"
            "  \"send_errors\": {\"eagain\": %llu, \"enobufs\": %llu,"
            " \"econnrefused\": %llu, \"other\": %llu}\n"
            "}\n",
            o->host, o->port, o->mode == MODE_COUNTERS ? "counters" : "mix",
            o->per_dgram, o->series, (unsigned long long)o->seed,
            o->rate, o->duration, rg->n,
            (unsigned long long)r->dgrams, (unsigned long long)r->metrics,
            (unsigned long long)r->bytes, (unsigned long long)r->counter_total,
            r->elapsed, r->metrics / el, r->dgrams / el,
            (unsigned long long)r->failed,
            (unsigned long long)r->err.eagain, (unsigned long long)r->err.enobufs,
            (unsigned long long)r->err.econnrefused,
            (unsigned long long)r->err.other);
    if (f != stdout) fclose(f);
}

int main(int argc, char **argv)
{
    struct opts o = parse_args(argc, argv);
    int fds[MAX_SOCKETS];
    for (int i = 0; i < o.sockets; i++) fds[i] = open_socket(&o);
    /* default 50us timer slack would make the sleep half of pacing sloppy */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    struct ring rg = build_ring(&o);
    struct result r = run(&o, fds, &rg);
    write_report(&o, &rg, &r);
    for (int i = 0; i < o.sockets; i++) close(fds[i]);
    return 0;
}
