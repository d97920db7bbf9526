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
 * rates), and the common bad lines: it counts them under the reason the Python parser would give
 * (invalid UTF-8, control bytes, NaN and other numbers the strict grammar refuses, too many tags, a
 * JSON document too deep to read, ...), checking in the Python's order, so that bad input costs
 * about what good input does. A line it is not sure of (non-ASCII text, a number Python's float()
 * might read, ...) goes to the Python parser through `fallback`, one line at a time, so exotic
 * input is decided by the specification itself (`fallbacks` counts them). A payload holding a line
 * that starts a JSON document the C cannot refuse itself: `feed` stops there and the caller routes it.
 *
 * Given rules (stages.receiver.identity), the C asks them of each series it has not seen, by its
 * built key, and keeps their answer in an array of records that hold their key (rule_answer_of):
 * without rules that costs one NULL check per line, and an answer without a scale one more per value.
 * With rules a line is read (parse_line) and filed (file_line) one line apart: its answer record is
 * asked for as soon as its key is built and comes while the next line is read, so that a cached answer
 * costs about what the entries' own lookup does without rules (file_parsed).
 */
#include "keytable.h"

#include <math.h>
#include <sys/mman.h>

/* stages.common.model.MetricType */
enum { COUNTER = 1, GAUGE = 2, GAUGE_DELTA = 3, TIMER = 4, HISTOGRAM = 5, DISTRIBUTION = 6, SET = 7,
       TRACE = 8 };

/* stages.receiver.parsers.base limits: past them the line goes to the fallback, which says why. */
#define MAX_NAME_CHARS 1024
#define MAX_TAG_CHARS 1024
#define MAX_TAGS 64
#define MAX_NUMBER_CHARS 64
#define MAX_MAGNITUDE 1e300
/* stages.receiver.parsers.base.MAX_JSON_DEPTH */
#define MAX_JSON_DEPTH 64
/* stages.common.model.KEY_SEPARATOR: never in a name or tag (parsers refuse control characters). */
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
    double ttl;                       /* gauges: the rules' ttl at its last sample, seconds (0: none) */
} entry;

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

typedef struct {
    span key, value;
} tag;

/* What the rules made of a series (UNASKED: their call failed), and the tally its samples are counted
 * under (-1: none): a record of w->answers, which holds its own key (kind 0: an empty record). The
 * answers are persistent and large (a few MiB at 20,000 series), and the shards' work on the same core
 * leaves them cold between two reads: a lookup touches this one record (128 bytes, two cache lines), not
 * a slot, an item and a key elsewhere, and a line asks for it (answer_prefetch) as soon as its key is
 * built, so that it comes while the values are read. Its hash is the entries' (the same seed): a line
 * hashes its key once for both. */
enum { UNASKED = 0, UNCHANGED, DROPPED, RENAMED };
#define INLINE_KEY 44  /* what keeps a record at 128 bytes */
typedef struct __attribute__((aligned(64))) {
    uint64_t hash;
    int kind;
    int state;
    int tally;
    int key_len;
    Py_ssize_t key_offset;  /* a key longer than INLINE_KEY: in w->answer_keys */
    Py_ssize_t offset;      /* RENAMED: the new series key in w->answer_keys, */
    int len, name_len;      /* its length and its name's */
    /* The entry the series was last filed under and the window generation that entry belongs to: a
     * series seen again before the entries are taken goes straight to it, one table lookup a line as
     * without rules (the entries are only appended to between two takes, so its index holds). */
    unsigned long long entry_generation;
    Py_ssize_t entry_index;
    double scale;           /* the scale of its values, when scaled */
    double ttl;             /* its gauges' ttl in seconds (0: none) */
    int scaled;
    char key[INLINE_KEY];
} rule_answer;
_Static_assert(sizeof(rule_answer) == 128, "a record is two cache lines");

/* A statsd line read (parse_line) and not yet filed (file_line): with rules a line is filed after the next
 * one is read, so that its answer record, asked for as soon as its key was built, has come by then. */
typedef struct {
    int mtype;
    const char *value, *bar;  /* its values' text, in the payload being fed */
    Py_ssize_t count, name_len;
    double rate;
    uint64_t hash;            /* with rules: answer_prefetch's */
    buffer key;               /* its series key, and its values: the buffers it was read into (swapped out) */
    double *numbers;
    Py_ssize_t cap_numbers;
} parsed_line;

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
    long long fallbacks;     /* lines handed to the Python parser: what the C was not sure of */
    PyObject *rules;         /* stages.receiver.identity.Rules; NULL without rules: nothing is asked */
    PyObject *answer;        /* stages.receiver.identity.answer, with rules */
    rule_answer *answers;    /* with rules: (type, series key) -> rule_answer, misses too: open addressing */
    Py_ssize_t n_answers, answer_slots;  /* answers held; records (a power of two, at least twice n_answers) */
    buffer answer_keys;      /* the new series keys the answers point into, and their own keys too long to hold */
    Py_ssize_t cache_size;   /* answers kept at most: the table is emptied when one more would not fit */
    long long rule_dropped;  /* samples the rules dropped */
    long long *tallies;      /* samples filed per tally the answers named (identity.Decided) */
    long long out_of_range;  /* values of the line at hand a rule's scale took out of range: feed counts them */
    Py_ssize_t n_tallies;    /* as many as the highest tally given needs */
    unsigned long long generation;  /* bumped whenever the entries are cleared: an answer's entry is good
                                       while its entry_generation is this (0 never is) */
    unsigned char tag_slots[256];  /* TAG_SLOTS: a line's tags by key, once it has many (put_tag) */
    parsed_line pending;     /* with rules: the line read before the one at hand, filed after it is read */
    int has_pending;
    int keep_container_id;   /* a `c:` field becomes the tag container_id (parsers.base.CONTAINER_ID_TAG) */
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

/* zlib.crc32, as stages.common.sharding.shard_for uses it. */
static uint32_t crc32_of(const char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++)
        c = crc_table[(c ^ (unsigned char)p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Entry i of the table, found for (kind, key); made ready when it was just `created`. */
static entry *file_entry(Window *w, Py_ssize_t i, int kind, const char *key, Py_ssize_t name_len, int created)
{
    entry *e = table_item(&w->table, i);
    if (created) {
        e->kind = kind;
        e->shard = (int)(crc32_of(key, name_len) % (uint32_t)w->shards);
    }
    return e;
}

/* The entry of (kind, key), made if new; the name (key up to its first separator) picks the shard. */
static entry *find_entry(Window *w, int kind, const char *key, Py_ssize_t key_len, Py_ssize_t name_len)
{
    int created;
    Py_ssize_t i = table_find(&w->table, kind, key, key_len, &created);
    return i < 0 ? NULL : file_entry(w, i, kind, key, name_len, created);
}

/* ---- the seam for rules (stages.receiver.identity): a series' identity rewritten or dropped ---- */


/* The flat tags (k1, v1, ...) of a series key's tail after its name ("", or "\x1fk1\x1fv1..."). */
static PyObject *tags_of(const char *p, Py_ssize_t n)
{
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        count += p[i] == KEY_SEPARATOR;
    PyObject *tags = PyTuple_New(count);
    const char *end = p + n;
    for (Py_ssize_t i = 0; tags != NULL && i < count; i++) {
        const char *start = p + 1;
        const char *next = memchr(start, KEY_SEPARATOR, (size_t)(end - start));
        p = next ? next : end;
        PyObject *text = PyUnicode_DecodeUTF8(start, p - start, NULL);
        if (text == NULL)
            Py_CLEAR(tags);
        else
            PyTuple_SET_ITEM(tags, i, text);
    }
    return tags;
}

/* A count for tally `tally` (identity.MAX_TALLIES bounds it): w->tallies grown to hold it. 0, or -1 error. */
static int make_tally(Window *w, long tally)
{
    if (tally < w->n_tallies)
        return 0;
    long long *grown = PyMem_Realloc(w->tallies, (size_t)(tally + 1) * sizeof(long long));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(grown + w->n_tallies, 0, (size_t)(tally + 1 - w->n_tallies) * sizeof(long long));
    w->tallies = grown;
    w->n_tallies = tally + 1;
    return 0;
}

/* identity.answer(rules, name, type, tags) of one series, into *a. 0, or -1 error (*a left UNASKED). */
static int ask_rules(Window *w, int kind, const char *key, Py_ssize_t key_len, Py_ssize_t name_len, rule_answer *a)
{
    PyObject *name = PyUnicode_DecodeUTF8(key, name_len, NULL);
    PyObject *tags = name ? tags_of(key + name_len, key_len - name_len) : NULL;
    PyObject *type = tags ? PyLong_FromLong(kind) : NULL;
    PyObject *pair = type ? PyObject_CallFunctionObjArgs(w->answer, w->rules, name, type, tags, NULL) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(tags);
    Py_XDECREF(type);
    if (pair == NULL)
        return -1;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 4 || !PyLong_Check(PyTuple_GET_ITEM(pair, 1))
            || (PyTuple_GET_ITEM(pair, 2) != Py_None && !PyFloat_Check(PyTuple_GET_ITEM(pair, 2)))
            || (PyTuple_GET_ITEM(pair, 3) != Py_None && !PyFloat_Check(PyTuple_GET_ITEM(pair, 3)))) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "rules: identity.answer gives (answer, tally, scale, ttl)");
        return -1;
    }
    PyObject *scale = PyTuple_GET_ITEM(pair, 2);
    int scaled = scale != Py_None;
    double scale_value = scaled ? PyFloat_AS_DOUBLE(scale) : 1.0;
    PyObject *ttl = PyTuple_GET_ITEM(pair, 3);
    double ttl_value = ttl != Py_None ? PyFloat_AS_DOUBLE(ttl) : 0.0;  /* identity.answer: positive when given */
    long tally = PyLong_AsLong(PyTuple_GET_ITEM(pair, 1));
    if ((tally == -1 && PyErr_Occurred()) || tally < -1 || tally > INT_MAX
            || (tally >= 0 && make_tally(w, tally) < 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "rules: a tally out of range");
        Py_DECREF(pair);
        return -1;
    }
    PyObject *got = PyTuple_GET_ITEM(pair, 0);
    Py_INCREF(got);
    Py_DECREF(pair);
    int failed = 0;
    if (got == Py_None) {
        a->state = UNCHANGED;
    } else if (got == Py_False) {
        a->state = DROPPED;
    } else if (PyUnicode_Check(got)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(got, &n);
        Py_ssize_t offset = w->answer_keys.len;
        if (p != NULL && n > INT_MAX)
            PyErr_SetString(PyExc_ValueError, "rules: a new series key too long");
        failed = p == NULL || n > INT_MAX || buffer_put(&w->answer_keys, p, n) < 0;
        if (!failed) {
            const char *separator = memchr(p, KEY_SEPARATOR, (size_t)n);
            a->state = RENAMED;
            a->offset = offset;
            a->len = (int)n;
            a->name_len = (int)(separator ? separator - p : n);
        }
    } else {
        PyErr_SetString(PyExc_TypeError, "rules: identity.answer gives None, False or a series key");
        failed = 1;
    }
    Py_DECREF(got);
    if (!failed) {
        a->tally = (int)tally;
        a->scaled = scaled;
        a->scale = scale_value;
        a->ttl = ttl_value;
    }
    return failed ? -1 : 0;
}

/* The key a record holds. */
static const char *answer_key(const Window *w, const rule_answer *a)
{
    return a->key_len <= INLINE_KEY ? a->key : w->answer_keys.data + a->key_offset;
}

/* The record of (kind, key, hash), or the empty one where it would go. */
static rule_answer *answer_probe(const Window *w, uint64_t hash, int kind, const char *key, Py_ssize_t len)
{
    Py_ssize_t mask = w->answer_slots - 1;
    for (Py_ssize_t s = (Py_ssize_t)(hash & (uint64_t)mask);; s = (s + 1) & mask) {
        rule_answer *a = &w->answers[s];
        if (a->kind == 0 || (a->hash == hash && a->kind == kind && a->key_len == len
                             && memcmp(answer_key(w, a), key, (size_t)len) == 0))
            return a;
    }
}

/* Twice the records (1024 at first), every answer moved to its place among them. 0, or -1 error. The
 * records are aligned to cache lines: one is two lines, never three. From HUGE_PAGE on (2 MiB: 16,384
 * records, 8,192 answers) they are asked to sit on huge pages where the kernel has them (transparent
 * huge pages, `madvise` mode): a lookup goes to a random record among megabytes, and on 4 KiB pages
 * nearly each one missed the TLB as well as the cache (measured: the largest single stall with rules). */
#define HUGE_PAGE ((size_t)2 << 20)
static int answers_grow(Window *w)
{
    Py_ssize_t slots = w->answer_slots ? 2 * w->answer_slots : 1024;
    rule_answer *old = w->answers;
    Py_ssize_t old_slots = w->answer_slots;
    size_t bytes = (size_t)slots * sizeof(rule_answer);  /* a power of two: a multiple of HUGE_PAGE from there */
    w->answers = aligned_alloc(bytes >= HUGE_PAGE ? HUGE_PAGE : 64, bytes);
    if (w->answers == NULL) {
        w->answers = old;
        PyErr_NoMemory();
        return -1;
    }
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_PAGE)
        (void)madvise(w->answers, bytes, MADV_HUGEPAGE);  /* advice: without huge pages it works as before */
#endif
    memset(w->answers, 0, (size_t)slots * sizeof(rule_answer));
    w->answer_slots = slots;
    for (Py_ssize_t i = 0; i < old_slots; i++)
        if (old[i].kind != 0)
            *answer_probe(w, old[i].hash, old[i].kind, answer_key(w, &old[i]), old[i].key_len) = old[i];
    free(old);
    return 0;
}

/* Every answer forgotten (with the keys they held). */
static void answers_clear(Window *w)
{
    memset(w->answers, 0, (size_t)w->answer_slots * sizeof(rule_answer));
    w->n_answers = 0;
    w->answer_keys.len = 0;
}

/* The hash of (kind, key) for both the records and the entries, and the record's first place asked for. */
static uint64_t answer_prefetch(const Window *w, int kind, const char *key, Py_ssize_t len)
{
    uint64_t hash = hash_key(w->table.seed, kind, key, len);
    const rule_answer *a = &w->answers[hash & (uint64_t)(w->answer_slots - 1)];
    __builtin_prefetch(a);
    __builtin_prefetch((const char *)a + 64);
    return hash;
}

/* The record of (kind, key) (`hash`: answer_prefetch's), a new one (*created set, UNASKED) when it is not
 * held; emptied first when a new one would make more than w->cache_size, as identity.Answers does. NULL
 * with an exception set. */
static rule_answer *answer_of(Window *w, uint64_t hash, int kind, const char *key, Py_ssize_t len, int *created)
{
    rule_answer *a = answer_probe(w, hash, kind, key, len);
    *created = a->kind == 0;
    if (!*created)
        return a;
    if (len > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "rules: a series key too long");
        return NULL;
    }
    if (w->n_answers + 1 > w->cache_size)
        answers_clear(w);
    if ((w->n_answers + 1) * 2 > w->answer_slots && answers_grow(w) < 0)
        return NULL;
    a = answer_probe(w, hash, kind, key, len);
    Py_ssize_t offset = 0;
    if (len > INLINE_KEY) {
        offset = w->answer_keys.len;
        if (buffer_put(&w->answer_keys, key, len) < 0)
            return NULL;
    }
    a->hash = hash;
    a->kind = kind;
    a->key_len = (int)len;
    a->key_offset = offset;
    if (len <= INLINE_KEY)
        memcpy(a->key, key, (size_t)len);
    w->n_answers++;
    return a;
}

/*
 * The rules' answer for the series (key, key_len: its built key, `hash`: answer_prefetch's; name_len: its
 * name's bytes) of type `kind`: NULL with *dropped set when they drop it (its `count` samples added to the answer's tally),
 * NULL without it on an error; else the record whose tally, scale and series the caller files under
 * (answered_entry), adding to the tally the samples it takes (a scale may refuse some). The rules are
 * asked only when w->answers does not hold the series, which keeps their answer, a miss too, until it
 * is emptied for want of room.
 */
static rule_answer *rule_answer_of(Window *w, uint64_t hash, int kind, const char *key, Py_ssize_t key_len,
                                   Py_ssize_t name_len, Py_ssize_t count, int *dropped)
{
    int created;
    *dropped = 0;
    rule_answer *a = answer_of(w, hash, kind, key, key_len, &created);
    if (a == NULL)
        return NULL;
    if (a->state == UNASKED && ask_rules(w, kind, key, key_len, name_len, a) < 0)
        return NULL;
    if (a->state == DROPPED) {
        if (a->tally >= 0)
            w->tallies[a->tally] += count;
        *dropped = 1;
        return NULL;
    }
    return a;
}

/* The entry the series `a` (of `hash`) answers for is filed under (the same series or the rules' new one):
 * straight from the record when it found it since the entries were last taken. NULL on an error. */
static entry *answered_entry(Window *w, rule_answer *a, uint64_t hash, int kind, const char *key, Py_ssize_t key_len,
                             Py_ssize_t name_len)
{
    if (a->entry_generation == w->generation)
        return table_item(&w->table, a->entry_index);
    if (a->state == RENAMED) {
        key = w->answer_keys.data + a->offset;
        key_len = a->len;
        name_len = a->name_len;
        hash = hash_key(w->table.seed, kind, key, key_len);
    }
    int created;
    Py_ssize_t e = table_find_hashed(&w->table, hash, kind, key, key_len, &created);
    if (e < 0)
        return NULL;
    a->entry_generation = w->generation;
    a->entry_index = e;
    return file_entry(w, e, kind, key, name_len, created);
}

/* A value of type `mtype` times a rule's scale, as statsd_exporter scales (a counter's value / rate,
 * then the scale); NAN when that is beyond MAX_MAGNITUDE (the sample is refused: out_of_range). */
static double scaled_value(int mtype, double value, double rate, double scale)
{
    double scaled = mtype == COUNTER ? value / rate * scale : value * scale;
    return fabs(scaled) <= MAX_MAGNITUDE ? scaled : NAN;
}

/* One value into its entry (a scaled counter's is what it adds: given with a rate of 1, it stays exact). */
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

/* ---- the statsd line, strictly: what is not certainly good or certainly bad goes to the fallback -- */

/*
 * What the C decides of a line: taken (OK), left to the Python parser (UNSURE), or bad for one of
 * the reasons stages.receiver.parsers counts, spelt as they are there (REASONS below). Each check
 * is made in the order the Python parser makes it, so a line with several faults gets the reason
 * the Python would give it; where the C cannot be sure which fault the Python meets first, UNSURE.
 */
enum {
    OK = 0, UNSURE,
    R_NO_VALUE, R_NO_TYPE, R_UNKNOWN_TYPE, R_BAD_VALUE, R_NON_FINITE, R_OUT_OF_RANGE, R_BAD_SAMPLE_RATE,
    R_EMPTY_NAME, R_NAME_TOO_LONG, R_BAD_TAG, R_TAG_TOO_LONG, R_TOO_MANY_TAGS, R_CONTROL_CHAR,
    R_INVALID_UTF8, R_TOO_DEEP, N_OUTCOMES
};
static const char *const REASONS[N_OUTCOMES] = {
    NULL, NULL,
    "no_value", "no_type", "unknown_type", "bad_value", "non_finite", "out_of_range", "bad_sample_rate",
    "empty_name", "name_too_long", "bad_tag", "tag_too_long", "too_many_tags", "control_char",
    "invalid_utf8", "too_deep",
};
static PyObject *reason_keys[N_OUTCOMES];  /* REASONS as str, made once: the keys of `bad` */

/* One more bad line under `reason` in the caller's dict. */
static int count_bad(PyObject *bad, int reason)
{
    PyObject *key = reason_keys[reason];
    PyObject *old = PyDict_GetItemWithError(bad, key);
    long long n = 0;
    if (old == NULL && PyErr_Occurred())
        return -1;
    if (old != NULL && (n = PyLong_AsLongLong(old)) == -1 && PyErr_Occurred())
        return -1;
    PyObject *now = PyLong_FromLongLong(n + 1);
    if (now == NULL)
        return -1;
    int failed = PyDict_SetItem(bad, key, now);
    Py_DECREF(now);
    return failed;
}

/* The first bytes of well-formed UTF-8 (Unicode's table 3-7), in order: each range's sequence length
 * and the bounds of its second byte (the others are 0x80-0xBF). A byte in no range starts none. */
static const struct utf8_lead {
    unsigned char first, last, len, lo, hi;
} UTF8_LEADS[] = {
    {0xC2, 0xDF, 2, 0x80, 0xBF}, {0xE0, 0xE0, 3, 0xA0, 0xBF}, {0xE1, 0xEC, 3, 0x80, 0xBF},
    {0xED, 0xED, 3, 0x80, 0x9F}, {0xEE, 0xEF, 3, 0x80, 0xBF}, {0xF0, 0xF0, 4, 0x90, 0xBF},
    {0xF1, 0xF3, 4, 0x80, 0xBF}, {0xF4, 0xF4, 4, 0x80, 0x8F},
};

/* Whether the bytes are UTF-8 as Python's strict decoder reads it (no overlong form, no surrogate,
 * nothing past U+10FFFF): decode_lines drops and counts a line that is not. */
static int valid_utf8(const char *text, Py_ssize_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    Py_ssize_t i = 0;
    while (i < n) {
        uint64_t word;
        while (i + 8 <= n && (memcpy(&word, s + i, 8), (word & 0x8080808080808080ULL) == 0))
            i += 8;  /* ASCII, eight bytes at a time: a long line costs a few microseconds */
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        const struct utf8_lead *lead = UTF8_LEADS;
        while (lead < UTF8_LEADS + sizeof UTF8_LEADS / sizeof *UTF8_LEADS && c > lead->last)
            lead++;
        if (lead == UTF8_LEADS + sizeof UTF8_LEADS / sizeof *UTF8_LEADS || c < lead->first)
            return 0;
        int len = lead->len;
        if (n - i < len || s[i + 1] < lead->lo || s[i + 1] > lead->hi)
            return 0;
        for (int k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += len;
    }
    return 1;
}

/*
 * Why a line holding a byte outside printable ASCII is bad, as the Python decides first: invalid_utf8
 * (decode_lines), then control_char (the statsd parser's check, on the line without its CR); UNSURE
 * for UTF-8 text or a tab, which the Python parser reads. `n` is the line with its CR, `cut` without.
 */
static int byte_reason(const char *p, Py_ssize_t n, Py_ssize_t cut)
{
    if (!valid_utf8(p, n))
        return R_INVALID_UTF8;
    for (Py_ssize_t i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)  /* stages.receiver.parsers.base.CONTROL_CHARS */
            return R_CONTROL_CHAR;
    }
    return UNSURE;
}

/*
 * A decimal number as stages.receiver.parsers.base.number reads it: float(), then its checks. A text
 * in the strict grammar [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)? is OK (*out set),
 * non_finite, bad_value (over MAX_NUMBER_CHARS) or out_of_range, in that order, as there. Up to 15
 * significant digits and 22 fraction digits the value is one exact division (correctly rounded, as
 * float() is); beyond, Python's own string-to-double. Outside the grammar: non_finite for the words
 * float() reads as NaN or infinity, bad_value for a text float() cannot read whatever it holds (a
 * character no float literal has), else UNSURE (underscores, spaces: float() may read them).
 */
static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_word(const char *p, Py_ssize_t n, const char *word)
{
    Py_ssize_t len = (Py_ssize_t)strlen(word);
    if (n != len)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((p[i] | 0x20) != word[i])
            return 0;
    return 1;
}

static int outside_grammar(const char *p, Py_ssize_t n)
{
    const char *word = n && (p[0] == '+' || p[0] == '-') ? p + 1 : p;
    Py_ssize_t word_n = n - (word - p);
    if (is_word(word, word_n, "nan") || is_word(word, word_n, "inf") || is_word(word, word_n, "infinity"))
        return R_NON_FINITE;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!strchr("0123456789.+-eE_nNaAiIfFtTyY \t\v\f\r\x1c\x1d\x1e\x1f", p[i]) || p[i] == '\0')
            return R_BAD_VALUE;
    return n == 0 ? R_BAD_VALUE : UNSURE;
}

static int number_of(const char *p, Py_ssize_t n, double *out)
{
    Py_ssize_t i = 0;
    int negative = 0;
    if (n > 0 && (p[0] == '+' || p[0] == '-')) {
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
        return outside_grammar(p, n);
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
            return outside_grammar(p, n);
    }
    if (i != n)
        return outside_grammar(p, n);
    if (n <= MAX_NUMBER_CHARS && !exponent_part && significant <= 15 && fraction <= 22) {
        double value = (double)mantissa / POW10[fraction];
        *out = negative ? -value : value;
        return OK;  /* at most 15 digits and no exponent: far within MAX_MAGNITUDE */
    }
    char small[MAX_NUMBER_CHARS + 1];
    char *text = n <= MAX_NUMBER_CHARS ? small : PyMem_Malloc((size_t)n + 1);
    if (text == NULL)
        return UNSURE;
    memcpy(text, p, (size_t)n);
    text[n] = '\0';
    char *end;
    double value = PyOS_string_to_double(text, &end, NULL);
    int outcome = OK;
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        outcome = UNSURE;
    } else if (end != text + n) {
        outcome = UNSURE;
    } else if (!isfinite(value)) {
        outcome = R_NON_FINITE;
    } else if (n > MAX_NUMBER_CHARS) {
        outcome = R_BAD_VALUE;
    } else if (fabs(value) > MAX_MAGNITUDE) {
        outcome = R_OUT_OF_RANGE;
    }
    if (text != small)
        PyMem_Free(text);
    *out = value;
    return outcome;
}

/* The last byte first: a line's tag keys (t1, t2, ...) often differ only there, and a line may hold
 * 64 tags, each compared with those before it. */
static int same(span a, const char *s, Py_ssize_t n)
{
    return a.n == n && (n == 0 || (a.p[n - 1] == s[n - 1] && memcmp(a.p, s, (size_t)n) == 0));
}

/*
 * A line's tags by key, once it has TAG_INDEX_FROM of them: a line of 64 tags would otherwise compare
 * each key with every one before it (2,000 comparisons, ten times a good line's whole cost).
 */
#define TAG_INDEX_FROM 8
#define TAG_SLOTS 256  /* a power of two, well over MAX_TAGS */

static size_t tag_slot(span key)
{
    uint32_t h = 2166136261u;  /* FNV-1a */
    for (Py_ssize_t i = 0; i < key.n; i++)
        h = (h ^ (unsigned char)key.p[i]) * 16777619u;
    return h & (TAG_SLOTS - 1);
}

/* The slot of `key` in w->tag_slots: where it is (a tag's index + 1), or the empty slot it would take. */
static size_t find_tag_slot(Window *w, span key)
{
    size_t slot = tag_slot(key);
    while (w->tag_slots[slot] && !same(w->tags[w->tag_slots[slot] - 1].key, key.p, key.n))
        slot = (slot + 1) & (TAG_SLOTS - 1);
    return slot;
}

/* stages.receiver.parsers.base.check_tag on the line's tags w->tags[0..*n): OK added (or replaced), or
 * its reason. */
static int put_tag(Window *w, Py_ssize_t *n, span key, span value)
{
    if (key.n == 0)
        return R_BAD_TAG;
    if (key.n > MAX_TAG_CHARS || value.n > MAX_TAG_CHARS)
        return R_TAG_TOO_LONG;
    tag *tags = w->tags;
    size_t slot = 0;
    if (*n < TAG_INDEX_FROM) {
        for (Py_ssize_t i = 0; i < *n; i++) {
            if (same(tags[i].key, key.p, key.n)) {
                tags[i].value = value;
                return OK;
            }
        }
    } else {
        slot = find_tag_slot(w, key);
        if (w->tag_slots[slot]) {
            tags[w->tag_slots[slot] - 1].value = value;
            return OK;
        }
    }
    if (*n >= MAX_TAGS)
        return R_TOO_MANY_TAGS;
    tags[*n].key = key;
    tags[*n].value = value;
    (*n)++;
    if (*n == TAG_INDEX_FROM) {  /* from here on by key: index the tags so far */
        memset(w->tag_slots, 0, sizeof w->tag_slots);
        for (Py_ssize_t i = 0; i < *n; i++)
            w->tag_slots[find_tag_slot(w, tags[i].key)] = (unsigned char)(i + 1);
    } else if (*n > TAG_INDEX_FROM) {
        w->tag_slots[slot] = (unsigned char)*n;
    }
    return OK;
}

static int tag_before(const tag *a, const tag *b)
{
    Py_ssize_t n = a->key.n < b->key.n ? a->key.n : b->key.n;
    int c = memcmp(a->key.p, b->key.p, (size_t)n);
    return c < 0 || (c == 0 && a->key.n < b->key.n);
}

/* The fields after the type, in their order: `@rate` (the last wins), `#k:v,...` tags, `c:<id>` (a tag
 * when kept); a `T` stamp is the Python parser's (it alone knows the receiver's open interval); others
 * are ignored. */
static int extension_fields(Window *w, const char *p, const char *end, Py_ssize_t *n_tags, double *rate)
{
    static const char container_id[] = "container_id";
    while (p < end) {
        const char *field_end = memchr(p, '|', (size_t)(end - p));
        if (field_end == NULL)
            field_end = end;
        if (field_end > p && *p == '@') {
            int got = number_of(p + 1, field_end - p - 1, rate);
            if (got != OK)
                return got;
            if (!(*rate > 0.0 && *rate <= 1.0) || 1.0 / *rate > MAX_MAGNITUDE)
                return R_BAD_SAMPLE_RATE;
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
                    int got = put_tag(w, n_tags, key, value);
                    if (got != OK)
                        return got;
                }
                item = item_end + 1;
            }
        } else if (field_end > p && *p == 'T') {
            return UNSURE;
        } else if (w->keep_container_id && field_end - p > 2 && p[0] == 'c' && p[1] == ':') {
            span key = {container_id, (Py_ssize_t)sizeof container_id - 1};
            int got = put_tag(w, n_tags, key, (span){p + 2, field_end - p - 2});
            if (got != OK)
                return got;
        }
        p = field_end + 1;
    }
    return OK;
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
 * The series key of name and tags (stages.common.model.series_key) in w->scratch, after the name's
 * normalisation (stages.receiver.parsers.base.metric_name on ASCII: spaces trimmed, runs of spaces
 * to '_', '/' to '-'). OK done, empty_name or name_too_long, -1 error.
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
        return R_EMPTY_NAME;
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
        return R_NAME_TOO_LONG;
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
    return OK;
}

/* The values of a line (`v[:v...]`), all or none: OK in w->numbers, the first bad one's outcome, -1 error. */
static int line_numbers(Window *w, const char *p, const char *end, Py_ssize_t *count)
{
    Py_ssize_t n = 0;
    while (1) {
        const char *piece_end = memchr(p, ':', (size_t)(end - p));
        if (piece_end == NULL)
            piece_end = end;
        if (n == w->cap_numbers && grow_doubles(&w->numbers, &w->cap_numbers) < 0)
            return -1;
        int got = number_of(p, piece_end - p, &w->numbers[n]);
        if (got != OK)
            return got;
        n++;
        if (piece_end == end)
            break;
        p = piece_end + 1;
    }
    *count = n;
    return OK;
}

/*
 * One statsd line (no newline) read: OK, its key in w->scratch, its values in w->numbers and the rest in
 * *out, for file_line; else a reason or UNSURE (the caller hands it to the fallback), or -1 error. Nothing
 * of it is taken yet. `n` is the line with its CR, `cut` without.
 */
static int parse_line(Window *w, const char *p, Py_ssize_t n, Py_ssize_t cut, parsed_line *out)
{
    const char *colon = NULL;
    for (Py_ssize_t i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c > 0x7e)
            return byte_reason(p, n, cut);
        if (c == ':' && colon == NULL)
            colon = p + i;
    }
    n = cut;
    const char *end = p + n;
    /* A service check or an event (dogstatsd_records.is_record: known by its start alone, whatever
     * fields and tags follow) is never a metric: the Python parser reads it, and says why it is dropped. */
    if (n >= 3 && p[0] == '_' && (memcmp(p, "_e{", 3) == 0 || (n >= 4 && memcmp(p, "_sc|", 4) == 0)))
        return UNSURE;
    if (colon == NULL)
        return R_NO_VALUE;
    span head = {p, colon - p};
    const char *bar = memchr(colon + 1, '|', (size_t)(end - colon - 1));
    if (bar == NULL)
        return R_NO_TYPE;
    const char *value = colon + 1;
    const char *type_end = memchr(bar + 1, '|', (size_t)(end - bar - 1));
    if (type_end == NULL)
        type_end = end;
    int mtype = type_code((span){bar + 1, type_end - bar - 1});
    if (mtype == 0)
        return R_UNKNOWN_TYPE;
    Py_ssize_t n_tags = 0;
    double rate = 1.0;
    if (type_end < end) {
        int got = extension_fields(w, type_end + 1, end, &n_tags, &rate);
        if (got != OK)
            return got;
    }
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
            if (eq == NULL)
                return R_BAD_TAG;
            int got = put_tag(w, &n_tags, (span){pair, eq - pair}, (span){eq + 1, pair_end - eq - 1});
            if (got != OK)
                return got;
            if (pair_end == head_end)
                break;
            pair = pair_end + 1;
        }
    }
    Py_ssize_t name_len;
    int built = build_key(w, name, w->tags, n_tags, &name_len);
    if (built != OK)
        return built;
    uint64_t hash = w->rules != NULL ? answer_prefetch(w, mtype, w->scratch.data, w->scratch.len) : 0;
    Py_ssize_t count = 1;
    if (mtype == SET) {
        if (bar == value)
            return R_BAD_VALUE;
    } else {
        int got = line_numbers(w, value, bar, &count);
        if (got != OK)
            return got;
        for (Py_ssize_t i = 0; mtype == COUNTER && i < count; i++)
            if (fabs(w->numbers[i] / rate) > MAX_MAGNITUDE)
                return R_OUT_OF_RANGE;  /* what it adds would be out of range */
    }
    out->mtype = mtype;
    out->value = value;
    out->bar = bar;
    out->count = count;
    out->name_len = name_len;
    out->rate = rate;
    out->hash = hash;
    return OK;
}

/* A line parse_line read (`key`, `numbers`: where it read them) into the window: OK, or -1 error. Values a
 * rule's scale refused are left in w->out_of_range for the caller to count. */
static int file_line(Window *w, const parsed_line *line, const char *key, Py_ssize_t key_len, double *numbers)
{
    int mtype = line->mtype;
    const char *value = line->value, *bar = line->bar;
    Py_ssize_t count = line->count, name_len = line->name_len;
    double rate = line->rate;
    uint64_t hash = line->hash;
    rule_answer *a = NULL;
    int scaled = 0;
    Py_ssize_t refused = 0;
    if (w->rules != NULL) {
        int dropped;
        a = rule_answer_of(w, hash, mtype, key, key_len, name_len, count, &dropped);
        if (dropped) {
            w->rule_dropped += count;  /* each value of the line a sample, as the parser makes them */
            return OK;
        }
        if (a == NULL)
            return -1;
        /* each value as its rule's scale makes it, before any is filed: one out of range is refused (NAN) */
        scaled = a->scaled;
        for (Py_ssize_t i = 0; scaled && mtype != SET && i < count; i++) {
            numbers[i] = scaled_value(mtype, numbers[i], rate, a->scale);
            refused += isnan(numbers[i]);
        }
        w->out_of_range = refused;
        if (a->tally >= 0)
            w->tallies[a->tally] += count - refused;
        if (refused == count)
            return OK;
    }
    entry *e = a != NULL ? answered_entry(w, a, hash, mtype, key, key_len, name_len)
                         : find_entry(w, mtype, key, key_len, name_len);
    if (e == NULL)
        return -1;
    if (mtype == GAUGE)
        e->ttl = a != NULL ? a->ttl : 0.0;  /* as its last sample's answer gives it, as PyWindow keeps it */
    if (mtype == SET) {
        PyObject *member = PyUnicode_DecodeASCII(value, bar - value, NULL);
        if (member == NULL)
            return -1;
        int failed = add_member(e, member);
        Py_DECREF(member);
        w->metrics++;
        w->shard_metrics[e->shard]++;
        return failed ? -1 : OK;
    }
    /* the value pieces, each its own sample; on a gauge a leading sign makes it a change */
    const char *piece = value;
    double counter_rate = scaled && mtype == COUNTER ? 1.0 : rate;  /* a scaled counter's value is what it adds */
    for (Py_ssize_t i = 0; i < count; i++) {
        int piece_type = mtype == GAUGE && (*piece == '+' || *piece == '-') ? GAUGE_DELTA : mtype;
        if ((refused == 0 || !isnan(numbers[i])) && add_value(e, piece_type, numbers[i], counter_rate) < 0)
            return -1;
        const char *next = memchr(piece, ':', (size_t)(bar - piece));
        piece = next ? next + 1 : bar;
    }
    w->metrics += count - refused;
    w->shard_metrics[e->shard] += count - refused;
    return OK;
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

/* One sample a Python parser made; `ruled`: asked of the rules (0: the receiver's own, filed as it is).
 * 0 taken, 1 refused (its rule's scale took its value out of range), -1 error. */
static int add_sample(Window *w, PyObject *sample, int ruled)
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
    rule_answer *a = NULL;
    uint64_t hash = 0;
    if (w->rules != NULL && ruled) {
        int dropped;
        hash = answer_prefetch(w, kind, b->data, b->len);
        a = rule_answer_of(w, hash, kind, b->data, b->len, name_len, 1, &dropped);
        if (dropped) {
            w->rule_dropped++;
            return 0;
        }
        if (a == NULL)
            return -1;
    }
    int scaled = a != NULL && a->scaled;
    PyObject *value = PyTuple_GET_ITEM(sample, 2);
    double number = 0.0;
    if (mtype == SET) {
        if (!PyUnicode_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "sample: a set member must be str");
            return -1;
        }
    } else {
        number = PyFloat_AsDouble(value);
        if (number == -1.0 && PyErr_Occurred())
            return -1;
    }
    if (scaled && mtype < SET) {  /* before anything of it is counted, as the Python window does */
        number = scaled_value((int)mtype, number, rate, a->scale);
        if (isnan(number))
            return 1;
        if (mtype == COUNTER)
            rate = 1.0;  /* what it adds */
    }
    if (a != NULL && a->tally >= 0)
        w->tallies[a->tally]++;
    entry *e = a != NULL ? answered_entry(w, a, hash, kind, b->data, b->len, name_len)
                         : find_entry(w, kind, b->data, b->len, name_len);
    if (e == NULL)
        return -1;
    if (kind == GAUGE)
        e->ttl = a != NULL ? a->ttl : 0.0;
    w->metrics++;
    w->shard_metrics[e->shard]++;
    if (mtype == SET)
        return add_member(e, value);
    return add_value(e, (int)mtype, number, rate);
}

/* Hand a line to the Python parser and take the samples it made. */
static int fallback_line(Window *w, const char *p, Py_ssize_t n, PyObject *bad)
{
    w->fallbacks++;
    PyObject *line = PyBytes_FromStringAndSize(p, n);
    if (line == NULL)
        return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(w->fallback, line, w->fallback_out, bad, NULL);
    Py_DECREF(line);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    int failed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(w->fallback_out) && !failed; i++) {
        int got = add_sample(w, PyList_GET_ITEM(w->fallback_out, i), 1);
        failed = got < 0 || (got == 1 && count_bad(bad, R_OUT_OF_RANGE) < 0);
    }
    if (PyList_SetSlice(w->fallback_out, 0, PyList_GET_SIZE(w->fallback_out), NULL) < 0)
        return -1;
    return failed ? -1 : 0;
}

/* ---- payloads that hold '{' or '[': JSON, or statsd lines the C can take ------------------- */

/*
 * stages.receiver.parsers' routing rule reads a line as a JSON document when its first non-whitespace
 * character is '{' or '[' (and a whole payload as one document only when that holds of its first
 * line with anything in it). A payload in which no line starts a document is statsd lines, each on
 * its own: the C takes it like any other. A line that does start one is left to the Python json
 * module, but for the two the C knows the end of: a line that is not UTF-8 (dropped and counted
 * before any JSON is read) and one too deep to read (json_original.load's precheck, below).
 */
enum { STATSD_LINE = N_OUTCOMES, DOCUMENT_LINE, UNSURE_LINE };  /* apart from the outcomes */

/* str.isspace() of an ASCII character */
static int ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

/* What the routing rule makes of a line; UNSURE_LINE when a non-ASCII character comes first (it may be
 * Unicode whitespace before a '{'). */
static int line_format(const char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n && ascii_space((unsigned char)p[i]))
        i++;
    if (i == n)
        return STATSD_LINE;
    unsigned char c = (unsigned char)p[i];
    if (c == '{' || c == '[')
        return DOCUMENT_LINE;
    if (c < 0x80 || (!memchr(p + i, '{', (size_t)(n - i)) && !memchr(p + i, '[', (size_t)(n - i))))
        return STATSD_LINE;
    return UNSURE_LINE;
}

static int json_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/*
 * stages.receiver.parsers.json_original.too_deep: more than MAX_JSON_DEPTH arrays or objects opened
 * before anything else (an object by its first key: `{"k":`), JSON whitespace between. Keys are read
 * as printable ASCII without escapes only: a key the Python would also accept, so 1 here is 1 there.
 */
static int too_deep(const char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    int depth = 0;
    while (1) {
        while (i < n && json_space(p[i]))
            i++;
        if (depth > MAX_JSON_DEPTH)
            return 1;
        if (i == n)
            return 0;
        if (p[i] == '[') {
            i++;
            depth++;
            continue;
        }
        if (p[i] != '{')
            return 0;
        for (i++; i < n && json_space(p[i]); i++)
            ;
        if (i == n || p[i] != '"')
            return 0;
        for (i++; i < n && p[i] != '"'; i++)
            if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '\\')
                return 0;
        for (i++; i < n && json_space(p[i]); i++)
            ;
        if (i >= n || p[i] != ':')
            return 0;
        i++;
        depth++;
    }
}

/* What a line that may start a JSON document comes to: STATSD_LINE, R_INVALID_UTF8, R_TOO_DEEP, or
 * UNSURE (a document for the json module). */
static int document_outcome(const char *p, Py_ssize_t n)
{
    int format = line_format(p, n);
    if (format == STATSD_LINE)
        return STATSD_LINE;
    if (format == DOCUMENT_LINE && too_deep(p, n))
        return valid_utf8(p, n) ? R_TOO_DEEP : R_INVALID_UTF8;
    return valid_utf8(p, n) ? UNSURE : R_INVALID_UTF8;
}

/* Whether the C takes a payload holding '{' or '[' itself: no line of it is a document for the json module. */
static int takes_payload(const char *p, Py_ssize_t n)
{
    const char *end = p + n;
    while (p <= end) {
        const char *line_end = memchr(p, '\n', (size_t)(end - p));
        if (line_end == NULL)
            line_end = end;
        if (document_outcome(p, line_end - p) == UNSURE)
            return 0;
        p = line_end + 1;
    }
    return 1;
}

/* The values of the last line filed that a rule's scale refused, each counted as a bad line. */
static int count_refused(Window *w, PyObject *bad)
{
    for (; w->out_of_range > 0; w->out_of_range--)
        if (count_bad(bad, R_OUT_OF_RANGE) < 0)
            return -1;
    return 0;
}

/* The line read before, with rules, filed (when there is one). 0, or -1 error. */
static int file_pending(Window *w, PyObject *bad)
{
    if (!w->has_pending)
        return 0;
    w->has_pending = 0;
    parsed_line *line = &w->pending;
    if (file_line(w, line, line->key.data, line->key.len, line->numbers) < 0)
        return -1;
    return count_refused(w, bad);
}

/*
 * A line parse_line read into the window. Without rules it is filed at once. With rules the line read
 * before it is filed now, and this one waits (its key and values swapped into w->pending, the buffers
 * there given to the next line to read into) until the next is read or the payload ends: its answer
 * record, asked for when its key was built, comes meanwhile. 0, or -1 error.
 */
static int file_parsed(Window *w, parsed_line *line, PyObject *bad)
{
    if (w->rules == NULL) {
        if (file_line(w, line, w->scratch.data, w->scratch.len, w->numbers) < 0)
            return -1;
        return count_refused(w, bad);
    }
    if (file_pending(w, bad) < 0)
        return -1;
    buffer key = w->pending.key;
    double *numbers = w->pending.numbers;
    Py_ssize_t cap_numbers = w->pending.cap_numbers;
    w->pending = *line;
    w->pending.key = w->scratch;
    w->pending.numbers = w->numbers;
    w->pending.cap_numbers = w->cap_numbers;
    w->scratch = key;
    w->numbers = numbers;
    w->cap_numbers = cap_numbers;
    w->has_pending = 1;
    return 0;
}

/* Every line of a payload: taken, counted as bad, or handed to the fallback, in order (a line waiting
 * for its answer record is filed before the next that is not read here, and at the end). `json`: it may
 * hold document lines (takes_payload said they are all bad). */
static int feed_payload(Window *w, const char *p, Py_ssize_t n, PyObject *bad, int json)
{
    const char *end = p + n;
    while (p <= end) {
        const char *line_end = memchr(p, '\n', (size_t)(end - p));
        if (line_end == NULL)
            line_end = end;
        Py_ssize_t len = line_end - p;
        Py_ssize_t cut = len && p[len - 1] == '\r' ? len - 1 : len;
        int got = json ? document_outcome(p, len) : STATSD_LINE;
        if (got == STATSD_LINE && cut > 0) {
            parsed_line line;
            got = parse_line(w, p, len, cut, &line);
            if (got == OK && file_parsed(w, &line, bad) < 0)
                got = -1;
        } else if (got == STATSD_LINE) {
            got = OK;  /* an empty line */
        }
        if (got < 0) {
            w->has_pending = 0;
            return -1;
        }
        if (got != OK && file_pending(w, bad) < 0)
            return -1;
        if (got == UNSURE && fallback_line(w, p, len, bad) < 0)
            return -1;
        if (got > UNSURE && count_bad(bad, got) < 0)
            return -1;
        p = line_end + 1;
    }
    return file_pending(w, bad);
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
    w->generation++;  /* every answer's entry is gone with them */
    w->metrics = 0;
    if (w->shard_metrics)
        memset(w->shard_metrics, 0, (size_t)w->shards * sizeof(long long));
}

/* The rules and the cache of their answers; the answer function and the default size from stages.receiver.identity,
 * the one place they are declared. */
static int init_rules(Window *w, PyObject *rules, Py_ssize_t cache_size)
{
    if (!PyCallable_Check(rules)) {
        PyErr_SetString(PyExc_TypeError, "rules: a callable, or None");
        return -1;
    }
    PyObject *identity = PyImport_ImportModule("stages.receiver.identity");
    if (identity == NULL)
        return -1;
    PyObject *answer = PyObject_GetAttrString(identity, "answer");
    if (answer != NULL && cache_size < 0) {
        PyObject *size = PyObject_GetAttrString(identity, "CACHE_SIZE");
        cache_size = size ? PyLong_AsSsize_t(size) : -1;
        Py_XDECREF(size);
    }
    Py_DECREF(identity);
    if (answer == NULL || PyErr_Occurred()) {
        Py_XDECREF(answer);
        return -1;
    }
    if (cache_size < 1) {
        Py_DECREF(answer);
        PyErr_SetString(PyExc_ValueError, "cache_size: at least 1");
        return -1;
    }
    if (answers_grow(w) < 0) {
        Py_DECREF(answer);
        return -1;
    }
    Py_INCREF(rules);
    w->rules = rules;
    w->answer = answer;
    w->cache_size = cache_size;
    return 0;
}

static int Window_init(Window *w, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"shards", "defaults", "fallback", "rules", "cache_size", "keep_container_id", NULL};
    int shards, keep_container_id = 0;
    PyObject *defaults, *fallback, *rules = Py_None;
    Py_ssize_t cache_size = -1;  /* identity.CACHE_SIZE */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!O|Onp:Window", kwlist, &shards, &PyTuple_Type, &defaults,
                                     &fallback, &rules, &cache_size, &keep_container_id))
        return -1;
    w->keep_container_id = keep_container_id;
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
    if (rules != Py_None && init_rules(w, rules, cache_size) < 0)
        return -1;
    w->generation = 1;  /* a new answer's entry_generation, 0, names no window's entries */
    return table_init(&w->table, sizeof(entry), w);
}

static void Window_dealloc(Window *w)
{
    clear_entries(w);
    table_free(&w->table);
    free(w->answers);  /* aligned_alloc's */
    PyMem_Free(w->answer_keys.data);
    PyMem_Free(w->tallies);
    Py_XDECREF(w->rules);
    Py_XDECREF(w->answer);
    PyMem_Free(w->scratch.data);
    PyMem_Free(w->numbers);
    PyMem_Free(w->pending.key.data);
    PyMem_Free(w->pending.numbers);
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
        int json = memchr(p, '{', (size_t)n) || memchr(p, '[', (size_t)n);
        if (json && !takes_payload(p, n))
            break;
        Py_INCREF(payload);  /* the fallback runs Python code: keep the payload alive meanwhile */
        int failed = feed_payload(w, p, n, bad, json) < 0;
        Py_DECREF(payload);
        if (failed)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *Window_add(Window *w, PyObject *sample)
{
    int got = ready(w) < 0 ? -1 : add_sample(w, sample, 1);
    if (got < 0)
        return NULL;
    if (got == 1)
        return Py_NewRef(reason_keys[R_OUT_OF_RANGE]);
    Py_RETURN_NONE;
}

static PyObject *Window_add_own(Window *w, PyObject *sample)
{
    if (ready(w) < 0 || add_sample(w, sample, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/*
 * One body (stages.common.contract.pack_batch_body) of entries order[0..n), and into counts (4 * n bytes)
 * each entry's metrics in body order (stages.common.contract.pack_entry_metrics: uint32 little-endian).
 */
static PyObject *body_of(Window *w, const Py_ssize_t *order, Py_ssize_t n, unsigned char *counts)
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
            uint32_t metrics = e->metrics > (long long)UINT32_MAX ? UINT32_MAX : (uint32_t)e->metrics;
            for (int j = 0; j < 4; j++)
                *counts++ = (unsigned char)(metrics >> (8 * j));
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

/* The gauge ttls of a batch's entries: {series key: seconds} of those the rules gave one (PyWindow's). */
static PyObject *ttls_of(Window *w, const Py_ssize_t *order, Py_ssize_t n)
{
    PyObject *ttls = PyDict_New();
    for (Py_ssize_t i = 0; ttls != NULL && i < n; i++) {
        entry *e = table_item(&w->table, order[i]);
        if (e->kind != GAUGE || e->ttl <= 0.0)
            continue;
        Py_ssize_t key_len;
        const char *key = table_key(&w->table, order[i], &key_len);
        PyObject *k = PyUnicode_DecodeUTF8(key, key_len, NULL);
        PyObject *v = k ? PyFloat_FromDouble(e->ttl) : NULL;
        if (v == NULL || PyDict_SetItem(ttls, k, v) < 0)
            Py_CLEAR(ttls);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return ttls;
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
            PyObject *counts = PyBytes_FromStringAndSize(NULL, count * 4);
            if (counts == NULL)
                goto fail;
            PyObject *body = body_of(w, order + start, count, (unsigned char *)PyBytes_AS_STRING(counts));
            if (body == NULL) {
                Py_DECREF(counts);
                goto fail;
            }
            PyObject *ttls = ttls_of(w, order + start, count);
            if (ttls == NULL) {
                Py_DECREF(body);
                Py_DECREF(counts);
                goto fail;
            }
            PyObject *batch = Py_BuildValue("(NnlNN)", body, count, (long)metrics, ttls, counts);
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
static PyObject *Window_get_fallbacks(Window *w, void *closure) { return PyLong_FromLongLong(w->fallbacks); }
static PyObject *Window_get_rule_dropped(Window *w, void *closure) { return PyLong_FromLongLong(w->rule_dropped); }
static PyObject *Window_get_tallies(Window *w, void *closure)
{
    PyObject *out = PyList_New(w->n_tallies);
    for (Py_ssize_t i = 0; out != NULL && i < w->n_tallies; i++) {
        PyObject *n = PyLong_FromLongLong(w->tallies[i]);
        if (n == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, n);
    }
    return out;
}

static PyMethodDef Window_methods[] = {
    {"feed", (PyCFunction)Window_feed, METH_VARARGS,
     "feed(payloads, start, bad) -> int: take payloads[start:] up to the first holding a JSON document; its index."},
    {"add", (PyCFunction)Window_add, METH_O, "add(sample): take one parsed sample."},
    {"add_own", (PyCFunction)Window_add_own, METH_O,
     "add_own(sample): take one of the receiver's own samples, filed as it is (the rules are not asked)."},
    {"take", (PyCFunction)Window_take, METH_O,
     "take(max_entries) -> per shard, [(body, entries, metrics, gauge ttls, entry metrics), ...]; the window is empty after."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Window_getset[] = {
    {"metrics", (getter)Window_get_metrics, NULL, "samples taken in since the last take", NULL},
    {"entries", (getter)Window_get_entries, NULL, "distinct series entries held", NULL},
    {"shard_metrics", (getter)Window_get_shard_metrics, NULL, "per shard, samples taken in since the last take",
     NULL},
    {"fallbacks", (getter)Window_get_fallbacks, NULL,
     "lines handed to the Python parser since the window was made (what the C was not sure of)", NULL},
    {"rule_dropped", (getter)Window_get_rule_dropped, NULL, "samples the rules dropped since the window was made",
     NULL},
    {"tallies", (getter)Window_get_tallies, NULL,
     "per tally the rules' answers named, the samples filed under it since the window was made", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WindowType = ONE_TYPE(
    "stages.receiver._window.Window",
    "The receiver's batch window, compiled: see stages.receiver.window.PyWindow.",
    Window, Window_init, Window_dealloc, Window_methods, Window_getset);

PyMODINIT_FUNC PyInit__window(void)
{
    crc_init();
    for (int i = 0; i < N_OUTCOMES; i++)
        if (REASONS[i] != NULL && reason_keys[i] == NULL && (reason_keys[i] = PyUnicode_InternFromString(REASONS[i])) == NULL)
            return NULL;
    return module_with_type("_window", "The receiver's batch window, compiled (see window.py).", &WindowType, "Window");
}
