/*
 * stages.aggregator._bucket: one interval's accumulators of a shard, compiled (the shard's hot path).
 *
 * The specification is stages/aggregator/series.py (IntervalBucket.merge): this file does what it
 * does, reading the pystatsd.batch.v2 body bytes in place instead of unpacking them into Python
 * lists first, and keeping every series in one table instead of a dict per type. Python objects
 * are made once per series per interval, when the flush asks for `contents()`, in the very shapes
 * IntervalBucket keeps, so the flush code is the same for both. tests/unit/test_bucket.py proves the
 * two give the same contents and aggregates.
 *
 * Bucket(admit): `admit(key) -> key` is SeriesLimit.admit, called once per new series key.
 * merge(body, entry_metrics=b""): add a batch body, and to each series the metrics its entry stands for
 * (the header's entry_metrics, uint32 little-endian in body order; empty: one each); ValueError when it
 * is not one, or the counts are not one per entry (what merged before stays merged, as in the Python).
 * contents() -> (counters, gauge_changes, sampled, sets, traces), once, at the flush: the timer values are
 * handed over (the bucket keeps none after). series_metrics() -> {key: metrics}.
 */
#include "keytable.h"

#include <math.h>

enum { COUNTER = 1, GAUGE = 2, TIMER = 4, HISTOGRAM = 5, DISTRIBUTION = 6, SET = 7, TRACE = 8, KINDS = 9 };

/* A series key's record (the payload of its key table item). */
typedef struct {
    int known;              /* admitted: target is set */
    Py_ssize_t target;      /* the record it adds to: itself, or its name's overflow series */
    Py_ssize_t acc[KINDS];  /* by type: index + 1 of its accumulator under this key, 0 for none */
} record;

/* 64 bytes on a 64-bit machine: kind and was_set share a word, so the count pystatsd top reads fits beside. */
typedef struct {
    int kind;
    int was_set;            /* gauges */
    Py_ssize_t record;
    double value;           /* counter or trace sum, gauge value, timer count */
    double *values;         /* timer-likes, in arrival order */
    Py_ssize_t n_values, cap_values;
    PyObject *members;      /* sets: a set of str */
    long long metrics;      /* metrics its entries stood for (entry_metrics): pystatsd top's figure */
} accumulator;

typedef struct {
    PyObject_HEAD
    PyObject *admit;
    key_table records;
    accumulator *accs;      /* in the order made */
    Py_ssize_t n_accs, cap_accs;
    int sampled_order[KINDS];  /* timer-like types in the order first made */
    int n_sampled_types;
} Bucket;

/* ---- msgpack, every form a writer may use for the body's fields ----------------------------- */

typedef struct {
    const unsigned char *p, *end;
    const unsigned char *counts, *counts_end;  /* entry_metrics: the next entry's count, or NULL for one each */
} reader;

static int bad_body(const char *what)
{
    PyErr_Format(PyExc_ValueError, "not a pystatsd.batch.v2 body: %s", what);
    return -1;
}

static int need(reader *r, Py_ssize_t n) { return r->end - r->p >= n ? 0 : bad_body("cut short"); }

static uint64_t big_endian(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* A header of fix / 8 / 16 / 32-bit length forms; returns the length or -1. */
static Py_ssize_t read_length(reader *r, unsigned char fix, unsigned char fix_mask, int c8, int c16, int c32,
                              const char *what)
{
    if (need(r, 1) < 0)
        return -1;
    unsigned char c = *r->p++;
    int size;
    if (fix_mask && (c & ~fix_mask) == fix)
        return c & fix_mask;
    if (c == c8)
        size = 1;
    else if (c == c16)
        size = 2;
    else if (c == c32)
        size = 4;
    else
        return bad_body(what);
    if (need(r, size) < 0)
        return -1;
    Py_ssize_t n = (Py_ssize_t)big_endian(r->p, size);
    r->p += size;
    return n;
}

static Py_ssize_t read_array(reader *r) { return read_length(r, 0x90, 0x0f, -1, 0xdc, 0xdd, "an array expected"); }

static int read_bytes(reader *r, Py_ssize_t n, const char **out)
{
    if (need(r, n) < 0)
        return -1;
    *out = (const char *)r->p;
    r->p += n;
    return 0;
}

static int read_str(reader *r, const char **s, Py_ssize_t *n)
{
    *n = read_length(r, 0xa0, 0x1f, 0xd9, 0xda, 0xdb, "a str expected");
    return *n < 0 ? -1 : read_bytes(r, *n, s);
}

static int read_bin(reader *r, const char **s, Py_ssize_t *n)
{
    *n = read_length(r, 0, 0, 0xc4, 0xc5, 0xc6, "a bin expected");
    return *n < 0 ? -1 : read_bytes(r, *n, s);
}

static int read_bool(reader *r, int *out)
{
    if (need(r, 1) < 0)
        return -1;
    unsigned char c = *r->p++;
    if (c != 0xc2 && c != 0xc3)
        return bad_body("a bool expected");
    *out = c == 0xc3;
    return 0;
}

/* Any msgpack int or float, as a double (what Python's + does with an int and a float). */
static int read_number(reader *r, double *out, int *is_int)
{
    if (need(r, 1) < 0)
        return -1;
    unsigned char c = *r->p++;
    *is_int = 1;
    if (c <= 0x7f) {
        *out = c;
        return 0;
    }
    if (c >= 0xe0) {
        *out = (int8_t)c;
        return 0;
    }
    int size;
    switch (c) {
    case 0xca: case 0xcc: case 0xd0: size = c == 0xca ? 4 : 1; break;
    case 0xcd: case 0xd1: size = 2; break;
    case 0xce: case 0xd2: size = 4; break;
    case 0xcb: case 0xcf: case 0xd3: size = 8; break;
    default: return bad_body("a number expected");
    }
    if (need(r, size) < 0)
        return -1;
    uint64_t v = big_endian(r->p, size);
    r->p += size;
    if (c == 0xca || c == 0xcb) {
        *is_int = 0;
        if (c == 0xca) {
            uint32_t bits = (uint32_t)v;
            float f;
            memcpy(&f, &bits, 4);
            *out = f;
        } else {
            memcpy(out, &v, 8);
        }
    } else if (c >= 0xd0) {  /* signed */
        int shift = 64 - 8 * size;
        *out = (double)((int64_t)(v << shift) >> shift);
    } else {
        *out = (double)v;
    }
    return 0;
}

/* The metrics the entry just merged stands for (the next of entry_metrics), or -1 with an exception set. */
static long long next_count(reader *r)
{
    if (r->counts == NULL)
        return 1;
    if (r->counts_end - r->counts < 4) {
        PyErr_SetString(PyExc_ValueError, "entry_metrics: fewer counts than the body has entries");
        return -1;
    }
    long long count = (long long)r->counts[0] | (long long)r->counts[1] << 8 | (long long)r->counts[2] << 16
                      | (long long)r->counts[3] << 24;
    r->counts += 4;
    return count;
}

/* The entry just merged into `a`: its metrics (the next of entry_metrics, or one) added to a's. 0, or -1. */
static int count_entry(reader *r, accumulator *a)
{
    long long count = next_count(r);
    if (count < 0)
        return -1;
    a->metrics += count;  /* the one figure the hot path keeps for pystatsd top */
    return 0;
}

/* A section's array header: the number of its entries of `stride` fields, or -1. */
static Py_ssize_t read_section(reader *r, Py_ssize_t stride)
{
    Py_ssize_t n = read_array(r);
    if (n >= 0 && n % stride)
        return bad_body("a section of partial entries");
    return n < 0 ? -1 : n / stride;
}

/* ---- series and their accumulators --------------------------------------------------------- */

/* The record of key (made when first seen). -1 with an exception set. */
static Py_ssize_t record_of(Bucket *b, const char *key, Py_ssize_t len)
{
    int created;
    return table_find(&b->records, 0, key, len, &created);
}

/* Admit a record's key through the series limit: where its samples go from now on. */
static int admit(Bucket *b, Py_ssize_t i)
{
    Py_ssize_t len;
    const char *key = table_key(&b->records, i, &len);
    PyObject *text = PyUnicode_DecodeUTF8(key, len, NULL);
    if (text == NULL)
        return -1;
    PyObject *admitted = PyObject_CallOneArg(b->admit, text);
    Py_DECREF(text);
    if (admitted == NULL)
        return -1;
    Py_ssize_t target_len;
    const char *target = PyUnicode_Check(admitted) ? PyUnicode_AsUTF8AndSize(admitted, &target_len) : NULL;
    if (target == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "admit must return the key as str");
        Py_DECREF(admitted);
        return -1;
    }
    Py_ssize_t t = target_len == len && memcmp(target, key, (size_t)len) == 0 ? i : record_of(b, target, target_len);
    Py_DECREF(admitted);
    if (t < 0)
        return -1;
    record *rec = table_item(&b->records, i);
    rec->known = 1;
    rec->target = t;
    return 0;
}

/*
 * The accumulator of (kind, key), as IntervalBucket finds it: the key's own when its type already
 * holds one under the key, else that of the series the key is admitted as (made if new).
 * *created is set when it was made. NULL with an exception set.
 */
static accumulator *accumulator_of(Bucket *b, int kind, const char *key, Py_ssize_t len, int *created)
{
    *created = 0;
    Py_ssize_t i = record_of(b, key, len);
    if (i < 0)
        return NULL;
    record *rec = table_item(&b->records, i);
    if (rec->acc[kind])
        return &b->accs[rec->acc[kind] - 1];
    if (!rec->known && admit(b, i) < 0)
        return NULL;
    Py_ssize_t t = ((record *)table_item(&b->records, i))->target;  /* admit may have moved the items */
    record *target = table_item(&b->records, t);
    if (target->acc[kind])
        return &b->accs[target->acc[kind] - 1];
    if (b->n_accs == b->cap_accs) {
        Py_ssize_t cap = b->cap_accs ? b->cap_accs * 2 : 256;
        accumulator *accs = PyMem_Realloc(b->accs, (size_t)cap * sizeof(accumulator));
        if (accs == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        b->accs = accs;
        b->cap_accs = cap;
    }
    accumulator *a = &b->accs[b->n_accs];
    memset(a, 0, sizeof(*a));
    a->kind = kind;
    a->record = t;
    target->acc[kind] = ++b->n_accs;
    *created = 1;
    return a;
}

/* Counters and traces (key, sum) or gauges (key, was set, value): one entry after its key. */
static int merge_scalar(Bucket *b, reader *r, int kind, const char *key, Py_ssize_t len)
{
    int gauge = kind == GAUGE;
    double value;
    int was_set = 0, is_int, created;
    if ((gauge && read_bool(r, &was_set) < 0) || read_number(r, &value, &is_int) < 0)
        return -1;
    accumulator *a = accumulator_of(b, kind, key, len, &created);
    if (a == NULL)
        return -1;
    if (gauge && (was_set || created)) {
        a->was_set = was_set;
        a->value = value;
    } else {
        a->value += value;
    }
    return count_entry(r, a);
}

/* Timers, histograms, distributions (key, type, count, packed values): one entry after its key. */
static int merge_sampled(Bucket *b, reader *r, int unused, const char *key, Py_ssize_t len)
{
    const char *packed;
    Py_ssize_t packed_len;
    double type, count;
    int is_int, created;
    if (read_number(r, &type, &is_int) < 0)
        return -1;
    if (!is_int || (type != TIMER && type != HISTOGRAM && type != DISTRIBUTION))
        return bad_body("a sampled entry of another type");
    if (read_number(r, &count, &is_int) < 0 || read_bin(r, &packed, &packed_len) < 0)
        return -1;
    if (packed_len % 8)
        return bad_body("values not whole float64s");
    int kind = (int)type;
    int seen = 0;
    for (int t = 0; t < b->n_sampled_types; t++)
        seen |= b->sampled_order[t] == kind;
    accumulator *a = accumulator_of(b, kind, key, len, &created);
    if (a == NULL)
        return -1;
    if (!seen)
        b->sampled_order[b->n_sampled_types++] = kind;
    a->value = created ? count : a->value + count;
    for (Py_ssize_t v = 0; v < packed_len; v += 8) {
        if (a->n_values == a->cap_values && grow_doubles(&a->values, &a->cap_values) < 0)
            return -1;
        uint64_t bits = 0;
        for (int j = 7; j >= 0; j--)
            bits = (bits << 8) | (unsigned char)packed[v + j];
        memcpy(&a->values[a->n_values++], &bits, 8);
    }
    return count_entry(r, a);
}

/* Sets (key, [members]): one entry after its key. */
static int merge_set(Bucket *b, reader *r, int unused, const char *key, Py_ssize_t len)
{
    Py_ssize_t members;
    int created;
    if ((members = read_array(r)) < 0)
        return -1;
    accumulator *a = accumulator_of(b, SET, key, len, &created);
    if (a == NULL)
        return -1;
    if (a->members == NULL && (a->members = PySet_New(NULL)) == NULL)
        return -1;
    for (Py_ssize_t m = 0; m < members; m++) {
        const char *text;
        Py_ssize_t text_len;
        if (read_str(r, &text, &text_len) < 0)
            return -1;
        PyObject *member = PyUnicode_DecodeUTF8(text, text_len, NULL);
        if (member == NULL)
            return -1;
        int failed = PySet_Add(a->members, member);
        Py_DECREF(member);
        if (failed)
            return -1;
    }
    return count_entry(r, a);
}

typedef int (*entry_merger)(Bucket *b, reader *r, int kind, const char *key, Py_ssize_t len);

/* A section of entries of ``stride`` fields each: every entry's key read here, the rest by ``merge``. */
static int merge_section(Bucket *b, reader *r, Py_ssize_t stride, int kind, entry_merger merge)
{
    Py_ssize_t n = read_section(r, stride);
    if (n < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *key;
        Py_ssize_t len;
        if (read_str(r, &key, &len) < 0 || merge(b, r, kind, key, len) < 0)
            return -1;
    }
    return 0;
}

/* ---- the Python type --------------------------------------------------------------------- */

static int Bucket_init(Bucket *b, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"admit", NULL};
    PyObject *admit_fn;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Bucket", kwlist, &admit_fn))
        return -1;
    if (!PyCallable_Check(admit_fn)) {
        PyErr_SetString(PyExc_TypeError, "admit: a callable");
        return -1;
    }
    if (b->records.slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Bucket is initialised once");
        return -1;
    }
    Py_INCREF(admit_fn);
    b->admit = admit_fn;
    return table_init(&b->records, sizeof(record), b);
}

static void Bucket_dealloc(Bucket *b)
{
    for (Py_ssize_t i = 0; i < b->n_accs; i++) {
        PyMem_Free(b->accs[i].values);
        Py_XDECREF(b->accs[i].members);
    }
    PyMem_Free(b->accs);
    table_free(&b->records);
    Py_XDECREF(b->admit);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyObject *Bucket_merge(Bucket *b, PyObject *args)
{
    PyObject *body, *entry_metrics = NULL;
    if (!PyArg_ParseTuple(args, "O|O:merge", &body, &entry_metrics))
        return NULL;
    if (b->records.slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Bucket not initialised");
        return NULL;
    }
    Py_buffer view, counts = {0};
    if (entry_metrics != NULL && PyObject_GetBuffer(entry_metrics, &counts, PyBUF_SIMPLE) < 0)
        return NULL;
    if (counts.len % 4) {
        PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError, "entry_metrics: not whole counts");
        return NULL;
    }
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        if (entry_metrics != NULL)
            PyBuffer_Release(&counts);
        return NULL;
    }
    const unsigned char *first_count = counts.len ? counts.buf : NULL;
    reader r = {view.buf, (const unsigned char *)view.buf + view.len, first_count,
                first_count ? first_count + counts.len : NULL};
    Py_ssize_t sections = read_array(&r);
    int failed = sections < 0 || (sections != 5 && bad_body("not five sections") < 0)
                 || merge_section(b, &r, 2, COUNTER, merge_scalar) < 0
                 || merge_section(b, &r, 3, GAUGE, merge_scalar) < 0
                 || merge_section(b, &r, 4, 0, merge_sampled) < 0
                 || merge_section(b, &r, 2, SET, merge_set) < 0
                 || merge_section(b, &r, 2, TRACE, merge_scalar) < 0
                 || (r.p != r.end && bad_body("bytes after the body") < 0);
    if (!failed && r.counts != r.counts_end) {
        PyErr_SetString(PyExc_ValueError, "entry_metrics: more counts than the body has entries");
        failed = 1;
    }
    PyBuffer_Release(&view);
    if (entry_metrics != NULL)
        PyBuffer_Release(&counts);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* Timer values as the contract packs them: float64, little-endian. */
static PyObject *packed_values(const accumulator *a)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, a->n_values * 8);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < a->n_values; i++) {
        uint64_t bits;
        memcpy(&bits, &a->values[i], 8);
        for (int j = 0; j < 8; j++)
            p[8 * i + j] = (unsigned char)(bits >> (8 * j));
    }
    return out;
}

/* What IntervalBucket keeps for one accumulator. */
static PyObject *held_value(accumulator *a)
{
    switch (a->kind) {
    case COUNTER:
    case TRACE:
        return PyFloat_FromDouble(a->value);
    case GAUGE:
        return Py_BuildValue("[Nd]", PyBool_FromLong(a->was_set), a->value);
    case SET:
        Py_INCREF(a->members);
        return a->members;
    default: {
        PyObject *packed = packed_values(a);
        if (packed == NULL)
            return NULL;
        /* Handed over: the flush holds the values once (a shard's interval of timers is megabytes). */
        PyMem_Free(a->values);
        a->values = NULL;
        a->n_values = a->cap_values = 0;
        return Py_BuildValue("[[N]d]", packed, a->value);
    }
    }
}

static PyObject *Bucket_contents(Bucket *b, PyObject *unused)
{
    PyObject *counters = PyDict_New(), *gauges = PyDict_New(), *sampled = PyDict_New(), *sets = PyDict_New();
    PyObject *traces = PyDict_New();
    PyObject *by_kind[KINDS] = {NULL, counters, gauges, NULL, NULL, NULL, NULL, sets, traces};
    if (counters == NULL || gauges == NULL || sampled == NULL || sets == NULL || traces == NULL)
        goto fail;
    for (int t = 0; t < b->n_sampled_types; t++) {
        PyObject *type = PyLong_FromLong(b->sampled_order[t]);
        PyObject *of_type = PyDict_New();
        int failed = type == NULL || of_type == NULL || PyDict_SetItem(sampled, type, of_type) < 0;
        Py_XDECREF(type);
        by_kind[b->sampled_order[t]] = of_type;
        Py_XDECREF(of_type);  /* sampled holds it */
        if (failed)
            goto fail;
    }
    for (Py_ssize_t i = 0; i < b->n_accs; i++) {
        accumulator *a = &b->accs[i];
        Py_ssize_t len;
        const char *key = table_key(&b->records, a->record, &len);
        PyObject *text = PyUnicode_DecodeUTF8(key, len, NULL);
        PyObject *value = text == NULL ? NULL : held_value(a);
        int failed = value == NULL || PyDict_SetItem(by_kind[a->kind], text, value) < 0;
        Py_XDECREF(text);
        Py_XDECREF(value);
        if (failed)
            goto fail;
    }
    return Py_BuildValue("(NNNNN)", counters, gauges, sampled, sets, traces);
fail:
    Py_XDECREF(counters);
    Py_XDECREF(gauges);
    Py_XDECREF(sampled);
    Py_XDECREF(sets);
    Py_XDECREF(traces);
    return NULL;
}

/* Each series' metrics, all its types added up (IntervalBucket.series_metrics): asked for only while a top runs. */
static PyObject *Bucket_series_metrics(Bucket *b, PyObject *unused)
{
    PyObject *out = PyDict_New();
    for (Py_ssize_t i = 0; out != NULL && i < b->n_accs; i++) {
        accumulator *a = &b->accs[i];
        Py_ssize_t len;
        const char *key = table_key(&b->records, a->record, &len);
        PyObject *text = PyUnicode_DecodeUTF8(key, len, NULL);
        PyObject *held = text == NULL ? NULL : PyDict_GetItemWithError(out, text);
        long long sum = a->metrics + (held != NULL ? PyLong_AsLongLong(held) : 0);
        PyObject *total = text == NULL || PyErr_Occurred() ? NULL : PyLong_FromLongLong(sum);
        if (total == NULL || PyDict_SetItem(out, text, total) < 0)
            Py_CLEAR(out);
        Py_XDECREF(text);
        Py_XDECREF(total);
    }
    return out;
}

static PyMethodDef Bucket_methods[] = {
    {"merge", (PyCFunction)Bucket_merge, METH_VARARGS,
     "merge(body, entry_metrics=b''): add a pystatsd.batch.v2 body, and each entry's metrics."},
    {"series_metrics", (PyCFunction)Bucket_series_metrics, METH_NOARGS,
     "series_metrics() -> {series key: metrics}, as IntervalBucket keeps it."},
    {"contents", (PyCFunction)Bucket_contents, METH_NOARGS,
     "contents() -> (counters, gauge_changes, sampled, sets, traces), as IntervalBucket keeps them."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BucketType = ONE_TYPE(
    "stages.aggregator._bucket.Bucket",
    "One interval's accumulators of a shard, compiled: see stages.aggregator.series.IntervalBucket.",
    Bucket, Bucket_init, Bucket_dealloc, Bucket_methods, NULL);

PyMODINIT_FUNC PyInit__bucket(void)
{
    return module_with_type("_bucket", "One interval's accumulators of a shard, compiled (see series.py).", &BucketType, "Bucket");
}
