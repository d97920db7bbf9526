/*
 * What the compiled window (receiver/window.c) and the compiled bucket (aggregator/bucket.c) share:
 * a growable byte buffer, a growable array of doubles, a module-of-one-type maker, and a table of byte-string keys (a series key
 * and a kind) to dense indexes, in the order they were first seen. Each item is its key's reference
 * followed by the user's payload, in one array: a lookup touches one slot, one item and the key.
 */
#ifndef PYSTATSD_KEYTABLE_H
#define PYSTATSD_KEYTABLE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} buffer;

static inline int buffer_reserve(buffer *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buffer_put(buffer *b, const void *bytes, Py_ssize_t n)
{
    if (buffer_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, bytes, (size_t)n);
    b->len += n;
    return 0;
}

/* Grows the room of a growable array of doubles by half (from 4 when empty): a shard holds an interval's
 * timer values in these, and doubling left a third of that room empty on average. */
static inline int grow_doubles(double **array, Py_ssize_t *cap)
{
    Py_ssize_t more = *cap ? *cap + *cap / 2 : 4;
    double *grown = PyMem_Realloc(*array, (size_t)more * sizeof(double));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = grown;
    *cap = more;
    return 0;
}

typedef struct {
    uint64_t hash;
    Py_ssize_t offset, len;  /* the key, in the table's key arena */
    int kind;
} key_ref;

typedef struct {
    uint64_t seed;
    Py_ssize_t *slots;   /* open addressing: index + 1, 0 for an empty slot */
    Py_ssize_t n_slots;  /* a power of two, at least twice n */
    char *items;         /* n items of `stride` bytes, in the order first seen: a key_ref, then the payload */
    Py_ssize_t n, cap, stride;
    buffer keys;
} key_table;

static inline key_ref *table_ref(const key_table *t, Py_ssize_t i) { return (key_ref *)(t->items + i * t->stride); }

/* The payload of item i: zeroed when the item is made. */
static inline void *table_item(const key_table *t, Py_ssize_t i) { return t->items + i * t->stride + sizeof(key_ref); }

/*
 * A word at a time (a series key is some 60 bytes: a byte at a time would cost more than the
 * lookup), seeded per table so that keys chosen to collide do not stay colliding.
 */
static inline uint64_t mix_word(uint64_t h, uint64_t word)
{
    h = (h ^ word) * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 32);
}

static inline uint64_t hash_key(uint64_t seed, int kind, const char *p, Py_ssize_t n)
{
    uint64_t h = mix_word(seed, ((uint64_t)kind << 32) ^ (uint64_t)n);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        h = mix_word(h, word);
    }
    uint64_t tail = 0;
    memcpy(&tail, p, (size_t)n);
    h = mix_word(h, tail) * 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 31);
}

static inline int table_grow_slots(key_table *t)
{
    Py_ssize_t n_slots = t->n_slots ? t->n_slots * 2 : 1024;
    Py_ssize_t *slots = PyMem_Calloc((size_t)n_slots, sizeof(Py_ssize_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Py_ssize_t s = (Py_ssize_t)(table_ref(t, i)->hash & (uint64_t)(n_slots - 1));
        while (slots[s])
            s = (s + 1) & (n_slots - 1);
        slots[s] = i + 1;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->n_slots = n_slots;
    return 0;
}

/* A seed for hash_key: random, else made from `salt` and the time. */
static inline uint64_t hash_seed(void *salt)
{
    uint64_t seed = (uint64_t)(uintptr_t)salt * 0x9E3779B97F4A7C15ULL;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed ^= (uint64_t)time(NULL);
    return seed;
}

/* A table whose items carry `payload` bytes each (a multiple of 8 keeps them aligned). */
static inline int table_init(key_table *t, Py_ssize_t payload, void *salt)
{
    memset(t, 0, sizeof(*t));
    t->stride = (Py_ssize_t)sizeof(key_ref) + payload;
    t->seed = hash_seed(salt);
    return table_grow_slots(t);
}

/* The index of (kind, key), whose hash_key under t->seed is `hash`; a new one (*created set) when first
 * seen. -1 with an exception set. For a caller that hashed the key already (or kept its hash). */
static inline Py_ssize_t table_find_hashed(key_table *t, uint64_t hash, int kind, const char *key, Py_ssize_t len,
                                           int *created)
{
    Py_ssize_t mask = t->n_slots - 1;
    Py_ssize_t s = (Py_ssize_t)(hash & (uint64_t)mask);
    *created = 0;
    while (t->slots[s]) {
        key_ref *ref = table_ref(t, t->slots[s] - 1);
        if (ref->hash == hash && ref->kind == kind && ref->len == len
                && memcmp(t->keys.data + ref->offset, key, (size_t)len) == 0)
            return t->slots[s] - 1;
        s = (s + 1) & mask;
    }
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 256;
        char *items = PyMem_Realloc(t->items, (size_t)(cap * t->stride));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->items = items;
        t->cap = cap;
    }
    if ((t->n + 1) * 2 > t->n_slots) {
        if (table_grow_slots(t) < 0)
            return -1;
        mask = t->n_slots - 1;
        s = (Py_ssize_t)(hash & (uint64_t)mask);
        while (t->slots[s])
            s = (s + 1) & mask;
    }
    Py_ssize_t offset = t->keys.len;
    if (buffer_put(&t->keys, key, len) < 0)
        return -1;
    *table_ref(t, t->n) = (key_ref){hash, offset, len, kind};
    memset(table_item(t, t->n), 0, (size_t)(t->stride - (Py_ssize_t)sizeof(key_ref)));
    t->slots[s] = t->n + 1;
    *created = 1;
    return t->n++;
}

/* The index of (kind, key); a new one (*created set) when first seen. -1 with an exception set. */
static inline Py_ssize_t table_find(key_table *t, int kind, const char *key, Py_ssize_t len, int *created)
{
    return table_find_hashed(t, hash_key(t->seed, kind, key, len), kind, key, len, created);
}

static inline const char *table_key(const key_table *t, Py_ssize_t i, Py_ssize_t *len)
{
    *len = table_ref(t, i)->len;
    return t->keys.data + table_ref(t, i)->offset;
}

static inline void table_clear(key_table *t)
{
    t->n = 0;
    t->keys.len = 0;
    memset(t->slots, 0, (size_t)t->n_slots * sizeof(Py_ssize_t));
}

static inline void table_free(key_table *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->items);
    PyMem_Free(t->keys.data);
    memset(t, 0, sizeof(*t));
}

/* The one type each compiled part defines: a plain object made by __init__, not subclassable, no GC. */
#define ONE_TYPE(qualified_name, doc, object, init, dealloc, methods, getset) {                          \
    PyVarObject_HEAD_INIT(NULL, 0)                                                                    \
    .tp_name = qualified_name, .tp_doc = doc, .tp_basicsize = sizeof(object),                         \
    .tp_flags = Py_TPFLAGS_DEFAULT, .tp_new = PyType_GenericNew, .tp_init = (initproc)(init),         \
    .tp_dealloc = (destructor)(dealloc), .tp_methods = methods, .tp_getset = getset,                  \
}

/* Each compiled part is a module of one type; each includes this header once, so this is its own. */
static PyModuleDef one_type_module = {PyModuleDef_HEAD_INIT};

/* The module `module_name` (for PyInit_) holding `type`, readied, under `name`. */
static inline PyObject *module_with_type(const char *module_name, const char *doc, PyTypeObject *type,
                                         const char *name)
{
    if (PyType_Ready(type) < 0)
        return NULL;
    one_type_module.m_name = module_name;
    one_type_module.m_doc = doc;
    one_type_module.m_size = -1;
    PyObject *module = PyModule_Create(&one_type_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

#endif
