/*
 * stages.receiver._window: the receiver's batch window, compiled (the receiver's hot path).
 *
 * The specification is stages/receiver/window.py (PyWindow): this file does what it does, faster,
 * and the property tests in tests/unit/test_window.py prove the two give the same batches. Read the
 * Python first; here is only what the C adds.
 *
 * Why the CPython C API (and not Cython or cffi): measured on the realistic mix, the work per line
 * is a few hundred nanoseconds, and every Python object made per line costs as much again; plain C
 * makes none on the common path (a line is scanned in place, its series key built in a scratch
 * buffer, looked up in an open-addressing table, its value added to the entry) and writes the
 * batch bodies as msgpack bytes directly. The file needs no build tool beyond the compiler that
 * already builds the recvmmsg reader, and it reads top to bottom as the Python does.
 *
 * What the C does itself: statsd lines that are plain printable ASCII and well formed, in every
 * dialect the Python parser reads (Etsy, DogStatsD tags, InfluxDB-style tags, packed values, sample
 * rates). Every other line (a bad one, non-ASCII, control bytes, a number Python's float() reads
 * but the strict grammar below does not) goes to the Python parser through `fallback`, one line at
 * a time, so bad-line reasons and exotic input are decided by the specification itself. A payload
 * holding '{' or '[' anywhere may hold a JSON document: `feed` stops there and the caller routes it.
 */
#include "keytable.h"

#include <math.h>

/* stages.model.MetricType */
enum { COUNTER = 1, GAUGE = 2, GAUGE_DELTA = 3, TIMER = 4, HISTOGRAM = 5, DISTRIBUTION = 6, SET = 7,
       TRACE = 8 };

/* stages.receiver.parsers.base limits: past them the line goes to the fallback, which says why. */
#define MAX_NAME_CHARS 1024
#define MAX_TAG_CHARS 1024
#define MAX_TAGS 64
#define MAX_NUMBER_CHARS 64
#define MAX_MAGNITUDE 1e300
/* stages.model.KEY_SEPARATOR: never in a name or tag (parsers refuse control characters). */
#define KEY_SEPARATOR '\x1f'

/* ---- msgpack, only the forms msgpack.packb(use_bin_type=True) writes for a batch body ------ */

static int pack_header(buffer *b, unsigned char fix, Py_ssize_t fix_max, unsigned char c8,
                       unsigned char c16, unsigned char c32, Py_ssize_t n)
{
    unsigned char head[5];
    Py_ssize_t size;
    if (n <= fix_max) {
        head[0] = (unsigned char)(fix | n);
        size = 1;
    } else if (c8 && n < 256) {
        head[0] = c8;
        head[1] = (unsigned char)n;
        size = 2;
    } else if (n < 65536) {
        head[0] = c16;
        head[1] = (unsigned char)(n >> 8);
        head[2] = (unsigned char)n;
        size = 3;
    } else {
        head[0] = c32;
        head[1] = (unsigned char)(n >> 24);
        head[2] = (unsigned char)(n >> 16);
        head[3] = (unsigned char)(n >> 8);
        head[4] = (unsigned char)n;
        size = 5;
    }
    return buffer_put(b, head, size);
}

static int pack_array(buffer *b, Py_ssize_t n) { return pack_header(b, 0x90, 15, 0, 0xdc, 0xdd, n); }

static int pack_str(buffer *b, const char *s, Py_ssize_t n)
{
    if (pack_header(b, 0xa0, 31, 0xd9, 0xda, 0xdb, n) < 0)
        return -1;
    return buffer_put(b, s, n);
}

/* bin8 has no fix form: a fix_max of -1 skips it. */
static int pack_bin_header(buffer *b, Py_ssize_t n) { return pack_header(b, 0, -1, 0xc4, 0xc5, 0xc6, n); }

static int pack_double(buffer *b, double value)
{
    unsigned char out[9];
    uint64_t bits;
    memcpy(&bits, &value, 8);
    out[0] = 0xcb;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
    return buffer_put(b, out, 9);
}

static int pack_bool(buffer *b, int value)
{
    unsigned char byte = value ? 0xc3 : 0xc2;
    return buffer_put(b, &byte, 1);
}

/* A metric type (1..8): a positive fixint. */
static int pack_small_int(buffer *b, int value)
{
    unsigned char byte = (unsigned char)value;
    return buffer_put(b, &byte, 1);
}

/* Timer values as the contract has them: float64, little-endian, back to back. */
static int pack_values(buffer *b, const double *values, Py_ssize_t n)
{
    if (pack_bin_header(b, n * 8) < 0 || buffer_reserve(b, n * 8) < 0)
        return -1;
    unsigned char *out = (unsigned char *)b->data + b->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &values[i], 8);
        for (int j = 0; j < 8; j++)
            out[8 * i + j] = (unsigned char)(bits >> (8 * j));
    }
    b->len += n * 8;
    return 0;
}

/* ---- the series a window holds ------------------------------------------------------------ */

/* The payload of a key table item (its key: the series key; its kind: the type). */
typedef struct {
    int kind;                         /* the type, a gauge delta filed as GAUGE */
    int shard;
    long long metrics;                /* samples added */
    int was_set;                      /* gauges: a plain value came (see PyWindow) */
    double value;                     /* counter sum, gauge value, timer or trace count */
    double *values;                   /* timer-likes: every value, in arrival order */
    Py_ssize_t n_values, cap_values;
    PyObject *members;                /* sets: dict member -> None, in arrival order */
} entry;

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

typedef struct {
    span key, value;
} tag;

typedef struct {
    PyObject_HEAD
    int shards;
    PyObject *fallback;      /* callable(line: bytes, out: list, bad: dict): the Python parser */
    PyObject *fallback_out;  /* the list it appends samples to, reused */
    PyObject *defaults_bytes;  /* keeps the default tags' text alive */
    tag *defaults;
    Py_ssize_t n_defaults;
    tag *tags;               /* a line's tags, then the defaults it lacks: MAX_TAGS + n_defaults + 1 */
    key_table table;         /* (type, series key) -> entry, in arrival order */
    buffer scratch;          /* the key being looked up; a normalised name */
    double *numbers;         /* a line's values */
    Py_ssize_t cap_numbers;
    long long metrics;
    long long *shard_metrics;  /* metrics per shard: what a kill -9 would take from each (stages.receiver.unsent) */
} Window;

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib.crc32, as stages.sharding.shard_for uses it. */
static uint32_t crc32_of(const char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++)
        c = crc_table[(c ^ (unsigned char)p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* The entry of (kind, key), made if new; the name (key up to its first separator) picks the shard. */
static entry *find_entry(Window *w, int kind, const char *key, Py_ssize_t key_len, Py_ssize_t name_len)
{
    int created;
    Py_ssize_t i = table_find(&w->table, kind, key, key_len, &created);
    if (i < 0)
        return NULL;
    entry *e = table_item(&w->table, i);
    if (created) {
        e->kind = kind;
        e->shard = (int)(crc32_of(key, name_len) % (uint32_t)w->shards);
    }
    return e;
}

static int add_value(entry *e, int mtype, double value, double rate)
{
    e->metrics++;
    switch (mtype) {
    case COUNTER:
        e->value += value / rate;
        return 0;
    case GAUGE:
        e->was_set = 1;
        e->value = value;
        return 0;
    case GAUGE_DELTA:
        e->value += value;
        return 0;
    case TRACE:
        e->value += 1.0 / rate;
        return 0;
    default:  /* TIMER, HISTOGRAM, DISTRIBUTION */
        if (e->n_values == e->cap_values && grow_doubles(&e->values, &e->cap_values) < 0)
            return -1;
        e->values[e->n_values++] = value;
        e->value += 1.0 / rate;
        return 0;
    }
}

static int add_member(entry *e, PyObject *member)
{
    if (e->members == NULL && (e->members = PyDict_New()) == NULL)
        return -1;
    e->metrics++;
    return PyDict_SetDefault(e->members, member, Py_None) == NULL ? -1 : 0;
}

/* ---- the statsd line, strictly: anything not certainly good goes to the fallback ----------- */

/*
 * A decimal number as float() reads it and stages.receiver.parsers.base.number accepts it:
 * [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?, at most MAX_NUMBER_CHARS, within MAX_MAGNITUDE.
 * Up to 15 significant digits and 22 fraction digits the value is one exact division (correctly
 * rounded, as float() is); beyond, Python's own string-to-double. 1 with *out set, or 0: not sure.
 */
static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int strict_number(const char *p, Py_ssize_t n, double *out)
{
    if (n < 1 || n > MAX_NUMBER_CHARS)
        return 0;
    Py_ssize_t i = 0;
    int negative = 0;
    if (p[0] == '+' || p[0] == '-') {
        negative = p[0] == '-';
        i = 1;
    }
    uint64_t mantissa = 0;
    int fraction = 0, significant = 0, any = 0;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, any = 1) {
        if (significant || p[i] != '0')
            significant++;
        if (significant <= 18)
            mantissa = mantissa * 10 + (uint64_t)(p[i] - '0');
    }
    if (i < n && p[i] == '.') {
        for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++, any = 1) {
            if (significant || p[i] != '0')
                significant++;
            if (significant <= 18)
                mantissa = mantissa * 10 + (uint64_t)(p[i] - '0');
            fraction++;
        }
    }
    if (!any)
        return 0;
    int exponent_part = 0;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        exponent_part = 1;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        Py_ssize_t start = i;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == start)
            return 0;
    }
    if (i != n)
        return 0;
    double value;
    if (!exponent_part && significant <= 15 && fraction <= 22) {
        value = (double)mantissa / POW10[fraction];
    } else {
        char text[MAX_NUMBER_CHARS + 1];
        memcpy(text, p, (size_t)n);
        text[n] = '\0';
        char *end;
        value = PyOS_string_to_double(text, &end, NULL);
        if (value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (end != text + n)
            return 0;
        *out = value;
        return fabs(value) <= MAX_MAGNITUDE;  /* NaN and infinities fail too */
    }
    *out = negative ? -value : value;
    return 1;  /* at most 15 digits and no exponent: far within MAX_MAGNITUDE */
}

static int same(span a, const char *s, Py_ssize_t n) { return a.n == n && memcmp(a.p, s, (size_t)n) == 0; }

/* stages.receiver.parsers.base.check_tag: 1 added (or replaced), 0 not sure. */
static int put_tag(tag *tags, Py_ssize_t *n, span key, span value)
{
    if (key.n == 0 || key.n > MAX_TAG_CHARS || value.n > MAX_TAG_CHARS)
        return 0;
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (same(tags[i].key, key.p, key.n)) {
            tags[i].value = value;
            return 1;
        }
    }
    if (*n >= MAX_TAGS)
        return 0;
    tags[*n].key = key;
    tags[*n].value = value;
    (*n)++;
    return 1;
}

static int tag_before(const tag *a, const tag *b)
{
    Py_ssize_t n = a->key.n < b->key.n ? a->key.n : b->key.n;
    int c = memcmp(a->key.p, b->key.p, (size_t)n);
    return c < 0 || (c == 0 && a->key.n < b->key.n);
}

/* The fields after the type: `@rate` (the last wins) and `#k:v,...` tags; others are ignored. */
static int extension_fields(const char *p, const char *end, tag *tags, Py_ssize_t *n_tags, double *rate)
{
    while (p < end) {
        const char *field_end = memchr(p, '|', (size_t)(end - p));
        if (field_end == NULL)
            field_end = end;
        if (field_end > p && *p == '@') {
            if (!strict_number(p + 1, field_end - p - 1, rate) || !(*rate > 0.0 && *rate <= 1.0)
                    || 1.0 / *rate > MAX_MAGNITUDE)
                return 0;
        } else if (field_end > p && *p == '#') {
            const char *item = p + 1;
            while (item < field_end) {
                const char *item_end = memchr(item, ',', (size_t)(field_end - item));
                if (item_end == NULL)
                    item_end = field_end;
                if (item_end > item) {
                    const char *colon = memchr(item, ':', (size_t)(item_end - item));
                    span key = {item, (colon ? colon : item_end) - item};
                    span value = {colon ? colon + 1 : item_end, colon ? item_end - colon - 1 : 0};
                    if (!put_tag(tags, n_tags, key, value))
                        return 0;
                }
                item = item_end + 1;
            }
        }
        p = field_end + 1;
    }
    return 1;
}

static int type_code(span t)
{
    if (t.n == 1) {
        switch (t.p[0]) {
        case 'c': return COUNTER;
        case 'g': return GAUGE;
        case 'h': return HISTOGRAM;
        case 'd': return DISTRIBUTION;
        case 's': return SET;
        }
    } else if (same(t, "ms", 2)) {
        return TIMER;
    }
    return 0;
}

/*
 * The series key of name and tags (stages.model.series_key) in w->scratch, after the name's
 * normalisation (stages.receiver.parsers.base.metric_name on ASCII: spaces trimmed, runs of spaces
 * to '_', '/' to '-'). 1 done, 0 not sure, -1 error.
 */
static int build_key(Window *w, span name, tag *tags, Py_ssize_t n_tags, Py_ssize_t *name_len)
{
    while (name.n && name.p[0] == ' ') {
        name.p++;
        name.n--;
    }
    while (name.n && name.p[name.n - 1] == ' ')
        name.n--;
    if (name.n == 0)
        return 0;
    buffer *b = &w->scratch;
    b->len = 0;
    if (buffer_reserve(b, name.n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < name.n; i++) {
        char c = name.p[i];
        if (c == ' ') {
            if (i > 0 && name.p[i - 1] == ' ')
                continue;
            c = '_';
        } else if (c == '/') {
            c = '-';
        }
        b->data[b->len++] = c;
    }
    if (b->len > MAX_NAME_CHARS)
        return 0;
    *name_len = b->len;
    /* the defaults the line does not set itself, then every tag sorted by key */
    Py_ssize_t n = n_tags;
    for (Py_ssize_t d = 0; d < w->n_defaults; d++) {
        Py_ssize_t i = 0;
        while (i < n_tags && !same(tags[i].key, w->defaults[d].key.p, w->defaults[d].key.n))
            i++;
        if (i == n_tags)
            tags[n++] = w->defaults[d];
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        tag t = tags[i];
        Py_ssize_t j = i;
        while (j > 0 && tag_before(&t, &tags[j - 1])) {
            tags[j] = tags[j - 1];
            j--;
        }
        tags[j] = t;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (buffer_reserve(b, tags[i].key.n + tags[i].value.n + 2) < 0)
            return -1;
        b->data[b->len++] = KEY_SEPARATOR;
        memcpy(b->data + b->len, tags[i].key.p, (size_t)tags[i].key.n);
        b->len += tags[i].key.n;
        b->data[b->len++] = KEY_SEPARATOR;
        memcpy(b->data + b->len, tags[i].value.p, (size_t)tags[i].value.n);
        b->len += tags[i].value.n;
    }
    return 1;
}

/* The values of a line (`v[:v...]`), all or none: 1 in w->numbers, 0 not sure, -1 error. */
static int line_numbers(Window *w, const char *p, const char *end, Py_ssize_t *count)
{
    Py_ssize_t n = 0;
    while (1) {
        const char *piece_end = memchr(p, ':', (size_t)(end - p));
        if (piece_end == NULL)
            piece_end = end;
        if (n == w->cap_numbers && grow_doubles(&w->numbers, &w->cap_numbers) < 0)
            return -1;
        if (!strict_number(p, piece_end - p, &w->numbers[n]))
            return 0;
        n++;
        if (piece_end == end)
            break;
        p = piece_end + 1;
    }
    *count = n;
    return 1;
}

/*
 * One statsd line (no newline; a trailing CR already cut): 1 taken into the window, 0 not sure
 * (the caller hands it to the fallback, and nothing of it was taken), -1 error.
 */
static int fast_line(Window *w, const char *p, Py_ssize_t n)
{
    const char *end = p + n, *colon = NULL;
    /* A service check or an event (the parser's _unsupported: known by its start alone, whatever fields
     * and tags follow) is never a metric: the fallback counts it under its own reason. An event holds
     * '{' and so never reaches here (feed routes its payload); it is refused all the same. */
    if (n >= 3 && p[0] == '_' && (memcmp(p, "_e{", 3) == 0 || (n >= 4 && memcmp(p, "_sc|", 4) == 0)))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c > 0x7e)
            return 0;
        if (c == ':' && colon == NULL)
            colon = p + i;
    }
    if (colon == NULL)
        return 0;
    span head = {p, colon - p};
    const char *bar = memchr(colon + 1, '|', (size_t)(end - colon - 1));
    if (bar == NULL)
        return 0;
    const char *value = colon + 1;
    const char *type_end = memchr(bar + 1, '|', (size_t)(end - bar - 1));
    if (type_end == NULL)
        type_end = end;
    int mtype = type_code((span){bar + 1, type_end - bar - 1});
    if (mtype == 0)
        return 0;
    Py_ssize_t n_tags = 0;
    double rate = 1.0;
    if (type_end < end && !extension_fields(type_end + 1, end, w->tags, &n_tags, &rate))
        return 0;
    span name = head;
    const char *comma = memchr(head.p, ',', (size_t)head.n);
    if (comma != NULL) {
        /* InfluxDB style, name,k=v,...: read after the DogStatsD tags, so they win a shared key */
        name.n = comma - head.p;
        const char *pair = comma + 1, *head_end = head.p + head.n;
        while (1) {
            const char *pair_end = memchr(pair, ',', (size_t)(head_end - pair));
            if (pair_end == NULL)
                pair_end = head_end;
            const char *eq = memchr(pair, '=', (size_t)(pair_end - pair));
            if (eq == NULL || !put_tag(w->tags, &n_tags, (span){pair, eq - pair},
                                       (span){eq + 1, pair_end - eq - 1}))
                return 0;
            if (pair_end == head_end)
                break;
            pair = pair_end + 1;
        }
    }
    Py_ssize_t name_len;
    int built = build_key(w, name, w->tags, n_tags, &name_len);
    if (built <= 0)
        return built;
    Py_ssize_t count = 1;
    if (mtype == SET) {
        if (bar == value)
            return 0;
    } else {
        int got = line_numbers(w, value, bar, &count);
        if (got <= 0)
            return got;
        for (Py_ssize_t i = 0; mtype == COUNTER && i < count; i++)
            if (fabs(w->numbers[i] / rate) > MAX_MAGNITUDE)
                return 0;  /* what it adds would be out of range */
    }
    entry *e = find_entry(w, mtype, w->scratch.data, w->scratch.len, name_len);
    if (e == NULL)
        return -1;
    if (mtype == SET) {
        PyObject *member = PyUnicode_DecodeASCII(value, bar - value, NULL);
        if (member == NULL)
            return -1;
        int failed = add_member(e, member);
        Py_DECREF(member);
        w->metrics++;
        w->shard_metrics[e->shard]++;
        return failed ? -1 : 1;
    }
    /* the value pieces, each its own sample; on a gauge a leading sign makes it a change */
    const char *piece = value;
    for (Py_ssize_t i = 0; i < count; i++) {
        int piece_type = mtype == GAUGE && (*piece == '+' || *piece == '-') ? GAUGE_DELTA : mtype;
        if (add_value(e, piece_type, w->numbers[i], rate) < 0)
            return -1;
        const char *next = memchr(piece, ':', (size_t)(bar - piece));
        piece = next ? next + 1 : bar;
    }
    w->metrics += count;
    w->shard_metrics[e->shard] += count;
    return 1;
}

/* ---- samples the Python parsers made (JSON, self-metrics, lines the C was not sure of) ----- */

static int utf8_of(PyObject *text, const char **p, Py_ssize_t *n)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "sample: name and tags must be str");
        return -1;
    }
    *p = PyUnicode_AsUTF8AndSize(text, n);
    return *p == NULL ? -1 : 0;
}

static int add_sample(Window *w, PyObject *sample)
{
    if (!PyTuple_Check(sample) || PyTuple_GET_SIZE(sample) != 5) {
        PyErr_SetString(PyExc_TypeError, "sample: a (name, type, value, rate, tags) tuple");
        return -1;
    }
    PyObject *tags = PyTuple_GET_ITEM(sample, 4);
    if (!PyTuple_Check(tags)) {
        PyErr_SetString(PyExc_TypeError, "sample: tags must be a tuple");
        return -1;
    }
    long mtype = PyLong_AsLong(PyTuple_GET_ITEM(sample, 1));
    if (mtype == -1 && PyErr_Occurred())
        return -1;
    if (mtype < COUNTER || mtype > TRACE) {
        PyErr_Format(PyExc_ValueError, "sample: unknown type %ld", mtype);
        return -1;
    }
    double rate = PyFloat_AsDouble(PyTuple_GET_ITEM(sample, 3));
    if (rate == -1.0 && PyErr_Occurred())
        return -1;
    const char *p;
    Py_ssize_t n, name_len;
    if (utf8_of(PyTuple_GET_ITEM(sample, 0), &p, &n) < 0)
        return -1;
    buffer *b = &w->scratch;
    b->len = 0;
    if (buffer_put(b, p, n) < 0)
        return -1;
    name_len = n;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tags); i++) {
        char separator = KEY_SEPARATOR;
        if (utf8_of(PyTuple_GET_ITEM(tags, i), &p, &n) < 0 || buffer_put(b, &separator, 1) < 0
                || buffer_put(b, p, n) < 0)
            return -1;
    }
    int kind = mtype == GAUGE_DELTA ? GAUGE : (int)mtype;
    entry *e = find_entry(w, kind, b->data, b->len, name_len);
    if (e == NULL)
        return -1;
    w->metrics++;
    w->shard_metrics[e->shard]++;
    PyObject *value = PyTuple_GET_ITEM(sample, 2);
    if (mtype == SET) {
        if (!PyUnicode_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "sample: a set member must be str");
            return -1;
        }
        return add_member(e, value);
    }
    double number = PyFloat_AsDouble(value);
    if (number == -1.0 && PyErr_Occurred())
        return -1;
    return add_value(e, (int)mtype, number, rate);
}

/* Hand a line to the Python parser and take the samples it made. */
static int fallback_line(Window *w, const char *p, Py_ssize_t n, PyObject *bad)
{
    PyObject *line = PyBytes_FromStringAndSize(p, n);
    if (line == NULL)
        return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(w->fallback, line, w->fallback_out, bad, NULL);
    Py_DECREF(line);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(w->fallback_out) && !failed; i++)
        failed = add_sample(w, PyList_GET_ITEM(w->fallback_out, i)) < 0;
    if (PyList_SetSlice(w->fallback_out, 0, PyList_GET_SIZE(w->fallback_out), NULL) < 0)
        return -1;
    return failed ? -1 : 0;
}

static int feed_payload(Window *w, const char *p, Py_ssize_t n, PyObject *bad)
{
    const char *end = p + n;
    while (p <= end) {
        const char *line_end = memchr(p, '\n', (size_t)(end - p));
        if (line_end == NULL)
            line_end = end;
        Py_ssize_t len = line_end - p;
        Py_ssize_t cut = len && p[len - 1] == '\r' ? len - 1 : len;
        if (cut > 0) {
            int got = fast_line(w, p, cut);
            if (got < 0)
                return -1;
            if (got == 0 && fallback_line(w, p, len, bad) < 0)
                return -1;
        }
        p = line_end + 1;
    }
    return 0;
}

/* ---- the Python type --------------------------------------------------------------------- */

static void clear_entries(Window *w)
{
    for (Py_ssize_t i = 0; i < w->table.n; i++) {
        entry *e = table_item(&w->table, i);
        PyMem_Free(e->values);
        Py_XDECREF(e->members);
    }
    if (w->table.slots)
        table_clear(&w->table);
    w->metrics = 0;
    if (w->shard_metrics)
        memset(w->shard_metrics, 0, (size_t)w->shards * sizeof(long long));
}

static int Window_init(Window *w, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"shards", "defaults", "fallback", NULL};
    int shards;
    PyObject *defaults, *fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!O:Window", kwlist, &shards, &PyTuple_Type, &defaults,
                                     &fallback))
        return -1;
    if (shards < 1) {
        PyErr_SetString(PyExc_ValueError, "shards: at least 1");
        return -1;
    }
    if (PyTuple_GET_SIZE(defaults) % 2 || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "defaults: a flat (k1, v1, ...) tuple; fallback: a callable");
        return -1;
    }
    if (w->table.slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Window is initialised once");
        return -1;
    }
    w->shards = shards;
    w->n_defaults = PyTuple_GET_SIZE(defaults) / 2;
    /* the defaults' text in one bytes object, which the tag spans point into */
    PyObject *joined = PyBytes_FromStringAndSize(NULL, 0);
    if (joined == NULL)
        return -1;
    Py_ssize_t *lengths = PyMem_Calloc((size_t)PyTuple_GET_SIZE(defaults) + 1, sizeof(Py_ssize_t));
    if (lengths == NULL) {
        Py_DECREF(joined);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(defaults); i++) {
        const char *p;
        Py_ssize_t n;
        if (utf8_of(PyTuple_GET_ITEM(defaults, i), &p, &n) < 0) {
            Py_DECREF(joined);
            PyMem_Free(lengths);
            return -1;
        }
        PyObject *piece = PyBytes_FromStringAndSize(p, n);
        PyBytes_ConcatAndDel(&joined, piece);
        if (joined == NULL) {
            PyMem_Free(lengths);
            return -1;
        }
        lengths[i] = n;
    }
    w->defaults_bytes = joined;
    w->defaults = PyMem_Calloc((size_t)w->n_defaults + 1, sizeof(tag));
    w->tags = PyMem_Calloc((size_t)(MAX_TAGS + w->n_defaults + 1), sizeof(tag));
    w->cap_numbers = 16;
    w->numbers = PyMem_Malloc((size_t)w->cap_numbers * sizeof(double));
    w->fallback_out = PyList_New(0);
    w->shard_metrics = PyMem_Calloc((size_t)shards, sizeof(long long));
    if (w->defaults == NULL || w->tags == NULL || w->numbers == NULL || w->shard_metrics == NULL) {
        PyMem_Free(lengths);
        PyErr_NoMemory();
        return -1;
    }
    if (w->fallback_out == NULL) {
        PyMem_Free(lengths);
        return -1;
    }
    const char *text = PyBytes_AS_STRING(joined);
    for (Py_ssize_t d = 0; d < w->n_defaults; d++) {
        w->defaults[d].key = (span){text, lengths[2 * d]};
        text += lengths[2 * d];
        w->defaults[d].value = (span){text, lengths[2 * d + 1]};
        text += lengths[2 * d + 1];
    }
    PyMem_Free(lengths);
    Py_INCREF(fallback);
    w->fallback = fallback;
    return table_init(&w->table, sizeof(entry), w);
}

static void Window_dealloc(Window *w)
{
    clear_entries(w);
    table_free(&w->table);
    PyMem_Free(w->scratch.data);
    PyMem_Free(w->numbers);
    PyMem_Free(w->defaults);
    PyMem_Free(w->tags);
    PyMem_Free(w->shard_metrics);
    Py_XDECREF(w->fallback);
    Py_XDECREF(w->fallback_out);
    Py_XDECREF(w->defaults_bytes);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static int ready(Window *w)
{
    if (w->table.slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Window not initialised");
        return -1;
    }
    return 0;
}

static PyObject *Window_feed(Window *w, PyObject *args)
{
    PyObject *payloads, *bad;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nO!:feed", &PyList_Type, &payloads, &start, &PyDict_Type, &bad) || ready(w) < 0)
        return NULL;
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < PyList_GET_SIZE(payloads); i++) {
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_Check(payload)) {
            PyErr_SetString(PyExc_TypeError, "feed: payloads must be bytes");
            return NULL;
        }
        const char *p = PyBytes_AS_STRING(payload);
        Py_ssize_t n = PyBytes_GET_SIZE(payload);
        if (memchr(p, '{', (size_t)n) || memchr(p, '[', (size_t)n))
            break;
        Py_INCREF(payload);  /* the fallback runs Python code: keep the payload alive meanwhile */
        int failed = feed_payload(w, p, n, bad) < 0;
        Py_DECREF(payload);
        if (failed)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *Window_add(Window *w, PyObject *sample)
{
    if (ready(w) < 0 || add_sample(w, sample) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* One body (stages.contract.pack_batch_body) of entries order[0..n). */
static PyObject *body_of(Window *w, const Py_ssize_t *order, Py_ssize_t n)
{
    static const int section_of[] = {0, 0, 1, 1, 2, 2, 2, 3, 4};  /* by kind */
    static const int stride[] = {2, 3, 4, 2, 2};
    Py_ssize_t per_section[5] = {0, 0, 0, 0, 0};
    for (Py_ssize_t i = 0; i < n; i++)
        per_section[section_of[((entry *)table_item(&w->table, order[i]))->kind]]++;
    buffer b = {NULL, 0, 0};
    if (pack_array(&b, 5) < 0)
        goto fail;
    for (int section = 0; section < 5; section++) {
        if (pack_array(&b, per_section[section] * stride[section]) < 0)
            goto fail;
        for (Py_ssize_t i = 0; i < n; i++) {
            entry *e = table_item(&w->table, order[i]);
            if (section_of[e->kind] != section)
                continue;
            Py_ssize_t key_len;
            const char *key = table_key(&w->table, order[i], &key_len);
            if (pack_str(&b, key, key_len) < 0)
                goto fail;
            int failed;
            switch (section) {
            case 0:  /* counters: key, sum */
            case 4:  /* traces: key, count */
                failed = pack_double(&b, e->value);
                break;
            case 1:  /* gauges: key, was set, value */
                failed = pack_bool(&b, e->was_set) < 0 || pack_double(&b, e->value) < 0;
                break;
            case 2:  /* timer-likes: key, type, count, values */
                failed = pack_small_int(&b, e->kind) < 0 || pack_double(&b, e->value) < 0
                         || pack_values(&b, e->values, e->n_values) < 0;
                break;
            default: {  /* sets: key, [members] */
                failed = pack_array(&b, e->members ? PyDict_GET_SIZE(e->members) : 0) < 0;
                Py_ssize_t pos = 0;
                PyObject *member, *ignored;
                while (!failed && e->members && PyDict_Next(e->members, &pos, &member, &ignored)) {
                    const char *p;
                    Py_ssize_t len;
                    failed = utf8_of(member, &p, &len) < 0 || pack_str(&b, p, len) < 0;
                }
            }
            }
            if (failed)
                goto fail;
        }
    }
    PyObject *body = PyBytes_FromStringAndSize(b.data, b.len);
    PyMem_Free(b.data);
    return body;
fail:
    PyMem_Free(b.data);
    return NULL;
}

static PyObject *Window_take(Window *w, PyObject *arg)
{
    Py_ssize_t max_entries = PyLong_AsSsize_t(arg);
    if ((max_entries == -1 && PyErr_Occurred()) || ready(w) < 0)
        return NULL;
    if (max_entries < 1) {
        PyErr_SetString(PyExc_ValueError, "take: max_entries must be at least 1");
        return NULL;
    }
    PyObject *out = PyList_New(w->shards);
    Py_ssize_t *order = PyMem_Malloc(((size_t)w->table.n + 1) * sizeof(Py_ssize_t));
    if (out == NULL || order == NULL) {
        Py_XDECREF(out);
        PyMem_Free(order);
        return PyErr_NoMemory();
    }
    for (int shard = 0; shard < w->shards; shard++) {
        Py_ssize_t n = 0;
        for (Py_ssize_t i = 0; i < w->table.n; i++)
            if (((entry *)table_item(&w->table, i))->shard == shard)
                order[n++] = i;
        PyObject *batches = PyList_New(0);
        if (batches == NULL)
            goto fail;
        PyList_SET_ITEM(out, shard, batches);
        for (Py_ssize_t start = 0; start < n; start += max_entries) {
            Py_ssize_t count = n - start < max_entries ? n - start : max_entries;
            long long metrics = 0;
            for (Py_ssize_t i = start; i < start + count; i++)
                metrics += ((entry *)table_item(&w->table, order[i]))->metrics;
            PyObject *body = body_of(w, order + start, count);
            if (body == NULL)
                goto fail;
            PyObject *batch = Py_BuildValue("(Nnl)", body, count, (long)metrics);
            if (batch == NULL || PyList_Append(batches, batch) < 0) {
                Py_XDECREF(batch);
                goto fail;
            }
            Py_DECREF(batch);
        }
    }
    PyMem_Free(order);
    clear_entries(w);
    return out;
fail:
    PyMem_Free(order);
    Py_DECREF(out);
    return NULL;
}

static PyObject *Window_get_metrics(Window *w, void *closure) { return PyLong_FromLongLong(w->metrics); }
static PyObject *Window_get_shard_metrics(Window *w, void *closure)
{
    PyObject *out = PyList_New(w->shards);
    for (int shard = 0; out != NULL && shard < w->shards; shard++) {
        PyObject *n = PyLong_FromLongLong(w->shard_metrics ? w->shard_metrics[shard] : 0);
        if (n == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, shard, n);
    }
    return out;
}
static PyObject *Window_get_entries(Window *w, void *closure) { return PyLong_FromSsize_t(w->table.n); }

static PyMethodDef Window_methods[] = {
    {"feed", (PyCFunction)Window_feed, METH_VARARGS,
     "feed(payloads, start, bad) -> int: take payloads[start:] up to the first that may hold JSON; its index."},
    {"add", (PyCFunction)Window_add, METH_O, "add(sample): take one parsed sample."},
    {"take", (PyCFunction)Window_take, METH_O,
     "take(max_entries) -> per shard, [(body, entries, metrics), ...]; the window is empty after."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Window_getset[] = {
    {"metrics", (getter)Window_get_metrics, NULL, "samples taken in since the last take", NULL},
    {"entries", (getter)Window_get_entries, NULL, "distinct series entries held", NULL},
    {"shard_metrics", (getter)Window_get_shard_metrics, NULL, "per shard, samples taken in since the last take",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WindowType = ONE_TYPE(
    "stages.receiver._window.Window",
    "The receiver's batch window, compiled: see stages.receiver.window.PyWindow.",
    Window, Window_init, Window_dealloc, Window_methods, Window_getset);

PyMODINIT_FUNC PyInit__window(void)
{
    crc_init();
    return module_with_type("_window", "The receiver's batch window, compiled (see window.py).", &WindowType, "Window");
}
