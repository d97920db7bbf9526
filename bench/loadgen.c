/*
 * loadgen: paced statsd/DogStatsD UDP load generator for loopback benchmarks.
 *
 * Build:  gcc -O2 -o bench/.build/loadgen bench/loadgen.c -lm   (bench/build.sh)
 *
 * The whole run's traffic is rendered before the clock starts (up to RING_BYTES_CAP, 1 GiB, of
 * lines and datagram records), so the send loop does nothing but pace and call sendmmsg(2) on
 * slices of it, and no datagram is sent twice: every line is drawn afresh. Only a run whose
 * traffic does not fit the cap sends part of it again, and its report says so ("ring_wrapped").
 * The send schedule is fixed (datagram n is due at start + n / datagram_rate) and the run ends
 * at the duration even if the schedule is not done; when the generator falls behind it catches
 * up in bounded batches and the report shows the achieved rate, so a run never silently offers
 * less than it claims.
 *
 * Two loads:
 *   counters  the repeated-counter load: "bench.c<i>:1|c|#env:bench,shard:<i%8>" over --series
 *             series (the lines repeat; that is the point of it).
 *   mix       the realistic mix: each line draws its kind afresh, 50 % counters (value 1), 30 %
 *             timers (log-normal milliseconds with two decimals, median 25 ms, long-tailed),
 *             15 % gauges (0.00-9999.99) and 5 % sets (members u0-u999999), then one of that
 *             kind's share of --series series at random: a name (one of 1,000 per kind) with
 *             three DogStatsD tags, "bench.t17:37.80|ms|#env:bench,host:h4,zone:z0".
 *
 * The report counts what a statsd daemon is expected to deliver: the counter increments and the
 * timer samples it sent (gauges and sets have no total to check).
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
#define MAX_LINE 128            /* longest line rendered, with room to spare */
#define RING_BYTES_CAP (1L << 30) /* lines and datagram records of one run, at most */
#define MAX_BATCH 64            /* bounds burst size when catching up */
#define SPIN_NS 100000L         /* below this gap we spin instead of sleeping */
#define QUANTUM_S 50e-6         /* wait until this much traffic is due, then send */
#define GRACE_S 0.02            /* late wakeups may finish the schedule this late */

/* The mix (percent of lines per kind) and its series: NAMES names per kind, told apart by tags. */
#define MIX_COUNTERS 50
#define MIX_TIMERS 30
#define MIX_GAUGES 15           /* the rest (5) are sets */
#define NAMES 1000
#define TIMER_LOG_MEDIAN 3.2188758248682006 /* ln(25 ms) */
#define TIMER_LOG_SIGMA 1.0
#define TIMER_MAX_CENTS 100000000ULL        /* 1,000,000.00 ms */
#define GAUGE_CENTS 1000000ULL              /* 0.00-9999.99 */
#define SET_MEMBERS 1000000ULL

enum mode { MODE_COUNTERS, MODE_MIX };
enum kind { KIND_COUNTER, KIND_TIMER, KIND_GAUGE, KIND_SET, KINDS };

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
    double start_at;            /* unix time to start sending at, once rendered (0: at once) */
};

/* One rendered datagram: where its payload is and what it carries. */
struct dgram {
    uint64_t offset;
    uint32_t len;
    uint16_t counters;          /* counter increments */
    uint16_t timers;            /* timer samples */
};

struct ring {
    long n;                     /* datagrams rendered */
    long needed;                /* datagrams the whole run's schedule holds */
    char *buf;                  /* all datagram payloads back to back */
    struct dgram *dg;
    uint64_t lines[KINDS];      /* lines rendered, per kind */
    double render_s;
};

struct errors {
    uint64_t eagain, enobufs, econnrefused, other;
};

struct result {
    uint64_t dgrams, metrics, counter_total, timer_samples, bytes, failed;
    struct errors err;
    double elapsed;
    double start_late;          /* how much later than --start-at the sending began */
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

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --host 127.0.0.1 --port P --rate METRICS_PER_SEC\n"
            "               --duration SECS --per-datagram K --series N\n"
            "               --mode counters|mix --seed S [--sockets N]\n"
            "               [--report out.json] [--untagged] [--start-at UNIX_TIME]\n");
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
    if (o->start_at < 0 || (o->start_at > 0 && o->start_at > unix_now() + MAX_DURATION_S))
        die("--start-at must be a unix time within 600 s from now");
}

static struct opts parse_args(int argc, char **argv)
{
    /* Every option but --untagged takes a value. */
#define WITH_VALUE(name, letter) {name, required_argument, 0, letter}
    static const struct option longopts[] = {
        WITH_VALUE("host", 'h'), WITH_VALUE("port", 'p'), WITH_VALUE("rate", 'r'),
        WITH_VALUE("duration", 'd'), WITH_VALUE("per-datagram", 'k'), WITH_VALUE("series", 'n'),
        WITH_VALUE("mode", 'm'), WITH_VALUE("seed", 's'), WITH_VALUE("report", 'o'),
        WITH_VALUE("sockets", 'S'), {"untagged", no_argument, 0, 'u'}, WITH_VALUE("start-at", 'a'),
        {0, 0, 0, 0},
    };
#undef WITH_VALUE
    struct opts o = {"127.0.0.1", 0, 0, 0, 1, 1, MODE_COUNTERS, 1, NULL, 1, 0, 0};
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
        case 'a': o.start_at = parse_num(optarg, "start-at"); break;
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

/* Hand-rolled formatting: rendering a whole run's lines with snprintf would take seconds. */
static char *put_str(char *p, const char *s)
{
    while (*s) *p++ = *s++;
    return p;
}

static char *put_u64(char *p, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = digits[--n];
    return p;
}

/* cents as a decimal with two places: 3780 -> "37.80" */
static char *put_cents(char *p, uint64_t cents)
{
    p = put_u64(p, cents / 100);
    *p++ = '.';
    *p++ = (char)('0' + cents / 10 % 10);
    *p++ = (char)('0' + cents % 10);
    return p;
}

/* A uniform double in (0, 1]. */
static double unit(uint64_t *rng)
{
    return (double)((splitmix64(rng) >> 11) + 1) * 0x1.0p-53;
}

/* A log-normal timer value in cents of a millisecond (Box-Muller for the normal). */
static uint64_t timer_cents(uint64_t *rng)
{
    double z = sqrt(-2.0 * log(unit(rng))) * cos(6.283185307179586 * unit(rng));
    double cents = exp(TIMER_LOG_MEDIAN + TIMER_LOG_SIGMA * z) * 100.0 + 0.5;
    return cents < (double)TIMER_MAX_CENTS ? (uint64_t)cents : TIMER_MAX_CENTS;
}

/* The series of each kind: its share of --series, at least one. */
static long kind_series(const struct opts *o, enum kind k)
{
    static const int share[KINDS] = {MIX_COUNTERS, MIX_TIMERS, MIX_GAUGES,
                                     100 - MIX_COUNTERS - MIX_TIMERS - MIX_GAUGES};
    long n = o->series * share[k] / 100;
    return n > 0 ? n : 1;
}

static enum kind draw_kind(uint64_t *rng)
{
    unsigned pick = (unsigned)(splitmix64(rng) % 100);
    if (pick < MIX_COUNTERS) return KIND_COUNTER;
    if (pick < MIX_COUNTERS + MIX_TIMERS) return KIND_TIMER;
    if (pick < MIX_COUNTERS + MIX_TIMERS + MIX_GAUGES) return KIND_GAUGE;
    return KIND_SET;
}

/* The repeated-counter load, unchanged: "bench.c17:1|c|#env:bench,shard:1". */
static char *render_counter_line(const struct opts *o, uint64_t *rng, char *p)
{
    uint64_t i = splitmix64(rng) % (uint64_t)o->series;
    p = put_u64(put_str(p, "bench.c"), i);
    p = put_str(p, ":1|c");
    if (!o->untagged)
        p = put_u64(put_str(p, "|#env:bench,shard:"), i % 8);
    return p;
}

/* One line of the mix; untagged, every series is a name of its own. */
static char *render_mix_line(const struct opts *o, uint64_t *rng, char *p, enum kind k)
{
    static const char *const prefix[KINDS] = {"bench.c", "bench.t", "bench.g", "bench.s"};
    uint64_t j = splitmix64(rng) % (uint64_t)kind_series(o, k);
    p = put_u64(put_str(p, prefix[k]), o->untagged ? j : j % NAMES);
    *p++ = ':';
    switch (k) {
    case KIND_COUNTER: p = put_str(p, "1|c"); break;
    case KIND_TIMER: p = put_str(put_cents(p, timer_cents(rng)), "|ms"); break;
    case KIND_GAUGE: p = put_str(put_cents(p, splitmix64(rng) % GAUGE_CENTS), "|g"); break;
    default: p = put_str(put_u64(put_str(p, "u"), splitmix64(rng) % SET_MEMBERS), "|s"); break;
    }
    if (!o->untagged) {
        uint64_t host = j / NAMES;
        p = put_u64(put_str(p, "|#env:bench,host:h"), host);
        p = put_u64(put_str(p, ",zone:z"), host % 4);
    }
    return p;
}

/* Renders one datagram at p; returns where it ends. */
static char *render_dgram(const struct opts *o, uint64_t *rng, char *p, struct ring *rg,
                          struct dgram *d)
{
    for (int k = 0; k < o->per_dgram; k++) {
        if (k > 0) *p++ = '\n';
        enum kind kind = o->mode == MODE_COUNTERS ? KIND_COUNTER : draw_kind(rng);
        p = o->mode == MODE_COUNTERS ? render_counter_line(o, rng, p)
                                     : render_mix_line(o, rng, p, kind);
        rg->lines[kind]++;
        d->counters += kind == KIND_COUNTER;
        d->timers += kind == KIND_TIMER;
    }
    return p;
}

/* Datagrams the schedule holds: rate / per_dgram * duration, rounded. */
static long scheduled_dgrams(const struct opts *o)
{
    double n = o->rate / o->per_dgram * o->duration + 0.5;
    return n < 1 ? 1 : (long)n;
}

/* Renders the run's traffic: every scheduled datagram while the lines and the datagram records
 * stay within RING_BYTES_CAP, else as many as fit (and the run sends some again). */
static struct ring build_ring(const struct opts *o)
{
    struct ring rg;
    memset(&rg, 0, sizeof(rg));
    double t0 = now_s();
    rg.needed = scheduled_dgrams(o);
    size_t slot = (size_t)o->per_dgram * MAX_LINE; /* the most one datagram can take */
    long max_records = (long)(RING_BYTES_CAP / sizeof(struct dgram));
    long records = rg.needed < max_records ? rg.needed : max_records;
    /* address space for the worst case; pages are touched only as lines are written, so the
     * ring costs what the run's lines take */
    size_t room = (size_t)records * slot;
    if (room > 4 * (size_t)RING_BYTES_CAP) room = 4 * (size_t)RING_BYTES_CAP;
    rg.dg = malloc((size_t)records * sizeof(*rg.dg));
    rg.buf = malloc(room);
    if (!rg.buf || !rg.dg) die("out of memory");

    uint64_t rng = o->seed;
    size_t used = 0;
    for (rg.n = 0; rg.n < records; rg.n++) {
        if (used + slot > room || used + (size_t)(rg.n + 1) * sizeof(struct dgram) > RING_BYTES_CAP)
            break;
        struct dgram *d = &rg.dg[rg.n];
        memset(d, 0, sizeof(*d));
        char *start = rg.buf + used;
        char *end = render_dgram(o, &rng, start, &rg, d);
        d->offset = used;
        d->len = (uint32_t)(end - start);
        used += d->len;
    }
    if (rg.n == 0) die("--rate and --duration leave no datagram to send");
    rg.render_s = now_s() - t0;
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
        const struct dgram *d = &rg->dg[pos + i];
        res->counter_total += d->counters;
        res->timer_samples += d->timers;
        res->bytes += d->len;
    }
    res->dgrams += (uint64_t)n;
}

/* Several source sockets (distinct source ports) let SO_REUSEPORT receivers share the load: the
 * kernel picks a receiving socket per flow, and one socket is one flow. */
static struct result run(const struct opts *o, const int *fds, const struct ring *rg)
{
    struct result res;
    memset(&res, 0, sizeof(res));
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < MAX_BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    double dgram_rate = o->rate / o->per_dgram;
    uint64_t total = (uint64_t)rg->needed;
    uint64_t done = 0;          /* datagrams attempted, sent or failed */
    /* one sendmmsg per ~50us of traffic instead of per datagram: the syscall,
     * not the copy, is what limits small datagrams; 50us keeps it smooth */
    uint64_t quantum = (uint64_t)(dgram_rate * QUANTUM_S);
    if (quantum < 1) quantum = 1;
    if (quantum > MAX_BATCH) quantum = MAX_BATCH;
    long pos = 0;
    uint64_t batch = 0;         /* sendmmsg calls so far: picks the socket */
    if (o->start_at > 0) {
        double gap = o->start_at - unix_now();
        if (gap > 0) wait_until(now_s() + gap);
        res.start_late = unix_now() - o->start_at;
    }
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
        for (uint64_t i = 0; i < want; i++) {
            iov[i].iov_base = rg->buf + rg->dg[pos + (long)i].offset;
            iov[i].iov_len = rg->dg[pos + (long)i].len;
        }

        int fd = fds[batch++ % (uint64_t)o->sockets];
        int n = sendmmsg(fd, msgs, (unsigned)want, MSG_DONTWAIT);
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
    uint64_t attempted = r->dgrams + r->failed;
    fprintf(f,
            "{\n"
            "  \"host\": \"%s\", \"port\": %d, \"mode\": \"%s\", \"untagged\": %s,\n"
            "  \"per_datagram\": %d, \"series\": %ld, \"seed\": %llu,\n"
            "  \"target_metrics_per_sec\": %.1f, \"target_duration\": %.3f,\n"
            "  \"ring_datagrams\": %ld, \"scheduled_datagrams\": %ld,"
            " \"ring_wrapped\": %s, \"render_seconds\": %.3f,\n"
            "  \"ring_lines\": {\"counter\": %llu, \"timer\": %llu, \"gauge\": %llu, \"set\": %llu},\n"
            "  \"datagrams_sent\": %llu, \"metrics_sent\": %llu,\n"
            "  \"bytes_sent\": %llu, \"counter_total\": %llu, \"timer_samples\": %llu,\n"
            "  \"elapsed\": %.6f, \"start_late\": %.6f,\n"
            "  \"achieved_metrics_per_sec\": %.1f,\n"
            "  \"achieved_datagrams_per_sec\": %.1f,\n"
            "  \"datagrams_failed\": %llu,\n"
            "  \"send_errors\": {\"eagain\": %llu, \"enobufs\": %llu,"
            " \"econnrefused\": %llu, \"other\": %llu}\n"
            "}\n",
            o->host, o->port, o->mode == MODE_COUNTERS ? "counters" : "mix",
            o->untagged ? "true" : "false",
            o->per_dgram, o->series, (unsigned long long)o->seed,
            o->rate, o->duration, rg->n, rg->needed,
            attempted > (uint64_t)rg->n ? "true" : "false", rg->render_s,
            (unsigned long long)rg->lines[KIND_COUNTER], (unsigned long long)rg->lines[KIND_TIMER],
            (unsigned long long)rg->lines[KIND_GAUGE], (unsigned long long)rg->lines[KIND_SET],
            (unsigned long long)r->dgrams, (unsigned long long)r->metrics,
            (unsigned long long)r->bytes, (unsigned long long)r->counter_total,
            (unsigned long long)r->timer_samples,
            r->elapsed, r->start_late, r->metrics / el, r->dgrams / el,
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
