/*
 * stages.receiver.listeners._drain: a thread that empties a Unix datagram socket's kernel queue into memory.
 *
 * Why: the kernel queues at most net.unix.max_dgram_qlen datagrams (10 by default) for a Unix
 * datagram socket, then refuses more to the sender (EAGAIN, or a blocking sender waits). The
 * receiver's one Python thread is away from its sockets for a millisecond at times (sending a
 * window to the shards, its interval report): long enough for a busy client to fill ten slots.
 * This thread only moves datagrams from the kernel into a buffer, never takes the GIL, and so
 * reads while the receiver works; the receiver takes them from the buffer when it gets round to it.
 *
 * start(fd, capacity) -> handle: starts the thread on the non-blocking datagram socket fd (not owned).
 *   It stops reading while `capacity` bytes wait (the kernel then refuses the sender, visibly).
 * wake_fd(handle) -> int: an eventfd that is readable while datagrams wait in the buffer (poll it).
 * take(handle, limit) -> list[bytes]: up to `limit` datagrams, in arrival order; OSError once the
 *   thread ended on an error and nothing is left.
 * stop(handle): ends the thread and waits for it; what it read stays for take(). Idempotent.
 * realtime(handle) -> bool: whether the thread runs SCHED_FIFO (below).
 *
 * The thread asks for SCHED_FIFO (priority 1) where the process may (root, CAP_SYS_NICE or
 * RLIMIT_RTPRIO): woken by a datagram, it then runs at once instead of after the sender's time
 * slice. A client sending a burst without blocking is woken on the same CPU as the thread and
 * fills ten slots in 50 us; as an ordinary thread the reader often ran only after the burst. It
 * costs little: the thread sleeps in poll, copies what arrived and sleeps again, and stops reading
 * while `capacity` bytes wait for the receiver.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "datagram_slots.h"

#define CAPSULE "stages.receiver.listeners._drain"

/* A run of records: [uint32 length][bytes], back to back. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} Records;

typedef struct {
    int fd;
    int wake_fd;
    int stop_fd;
    size_t capacity;
    pthread_t thread;
    int running;             /* the thread was started and not yet joined */
    pthread_mutex_t lock;    /* guards in, signalled, stopping, error */
    pthread_cond_t room;     /* the thread waits on it while `in` holds `capacity` bytes */
    Records in;              /* filled by the thread */
    Records out;             /* handed out by take(), from out_pos on; only the GIL holder touches it */
    size_t out_pos;
    int signalled;           /* wake_fd's counter is not zero */
    int stopping;
    int realtime;            /* the thread got SCHED_FIFO */
    int started;             /* the thread has set realtime */
    int error;               /* the errno that ended the thread, 0 if none */
} Drain;

static int append_record(Records *r, const char *bytes, uint32_t n)
{
    size_t need = r->len + sizeof(n) + n;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < need)
            cap *= 2;
        char *grown = realloc(r->data, cap);
        if (grown == NULL)
            return -1;
        r->data = grown;
        r->cap = cap;
    }
    memcpy(r->data + r->len, &n, sizeof(n));
    memcpy(r->data + r->len + sizeof(n), bytes, n);
    r->len = need;
    return 0;
}

/* With the lock held: make wake_fd readable. */
static void signal_waiting(Drain *d)
{
    if (!d->signalled) {
        uint64_t one = 1;
        if (write(d->wake_fd, &one, sizeof(one)) == sizeof(one))
            d->signalled = 1;
    }
}

static void *drain_main(void *arg)
{
    Drain *d = arg;
    /* Signals are the main thread's business (the receiver's stop and reload). */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    struct sched_param fifo = {.sched_priority = 1};
    int realtime = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo) == 0;
    pthread_mutex_lock(&d->lock);
    d->realtime = realtime;
    d->started = 1;
    pthread_cond_broadcast(&d->room);
    pthread_mutex_unlock(&d->lock);
    static __thread struct mmsghdr msgs[SLOTS];
    static __thread struct iovec iovs[SLOTS];
    char *slots = malloc((size_t)SLOTS * SLOT_BYTES);
    int error = slots == NULL ? ENOMEM : 0;
    if (slots != NULL)
        lay_out_slots(iovs, slots);
    struct pollfd fds[2] = {{d->fd, POLLIN, 0}, {d->stop_fd, POLLIN, 0}};
    while (!error) {
        pthread_mutex_lock(&d->lock);
        while (d->in.len >= d->capacity && !d->stopping)
            pthread_cond_wait(&d->room, &d->lock);
        int stopping = d->stopping;
        pthread_mutex_unlock(&d->lock);
        if (stopping)
            break;
        if (poll(fds, 2, -1) < 0) {
            if (errno != EINTR)
                error = errno;
            continue;
        }
        if (fds[1].revents)
            break;
        ready_slots(msgs, iovs, SLOTS);
        int n = recvmmsg(d->fd, msgs, SLOTS, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                error = errno;
            continue;
        }
        pthread_mutex_lock(&d->lock);
        for (int i = 0; i < n && !error; i++)
            if (append_record(&d->in, iovs[i].iov_base, msgs[i].msg_len) < 0)
                error = ENOMEM;  /* what was read before stays; this datagram is the one lost */
        if (n > 0)
            signal_waiting(d);
        pthread_mutex_unlock(&d->lock);
    }
    pthread_mutex_lock(&d->lock);
    d->error = error;
    if (error)
        signal_waiting(d);  /* so that take() is called and reports it */
    pthread_mutex_unlock(&d->lock);
    free(slots);
    return NULL;
}

static void stop_thread(Drain *d)
{
    if (!d->running)
        return;
    pthread_mutex_lock(&d->lock);
    d->stopping = 1;
    pthread_cond_signal(&d->room);
    pthread_mutex_unlock(&d->lock);
    uint64_t one = 1;
    if (write(d->stop_fd, &one, sizeof(one)) < 0) {
        /* an eventfd write fails only on overflow; the stopping flag ends the thread at its next turn */
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_join(d->thread, NULL);
    Py_END_ALLOW_THREADS
    d->running = 0;
}

static void drain_free(PyObject *capsule)
{
    Drain *d = PyCapsule_GetPointer(capsule, CAPSULE);
    if (d == NULL)
        return;
    stop_thread(d);
    close(d->wake_fd);
    close(d->stop_fd);
    free(d->in.data);
    free(d->out.data);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->room);
    free(d);
}

static Drain *handle(PyObject *capsule)
{
    return PyCapsule_GetPointer(capsule, CAPSULE);
}

static PyObject *start(PyObject *module, PyObject *args)
{
    int fd;
    Py_ssize_t capacity;
    if (!PyArg_ParseTuple(args, "in:start", &fd, &capacity))
        return NULL;
    Drain *d = calloc(1, sizeof(Drain));
    if (d == NULL)
        return PyErr_NoMemory();
    d->fd = fd;
    d->capacity = capacity > 0 ? (size_t)capacity : 1;
    d->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    d->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->room, NULL);
    PyObject *capsule = NULL;
    if (d->wake_fd < 0 || d->stop_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        int failed = pthread_create(&d->thread, NULL, drain_main, d);
        if (failed) {
            errno = failed;
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            d->running = 1;
            capsule = PyCapsule_New(d, CAPSULE, drain_free);
            if (capsule == NULL)
                stop_thread(d);
        }
    }
    if (capsule == NULL) {
        if (d->wake_fd >= 0)
            close(d->wake_fd);
        if (d->stop_fd >= 0)
            close(d->stop_fd);
        pthread_mutex_destroy(&d->lock);
        pthread_cond_destroy(&d->room);
        free(d);
    }
    return capsule;
}

static PyObject *wake_fd(PyObject *module, PyObject *capsule)
{
    Drain *d = handle(capsule);
    return d == NULL ? NULL : PyLong_FromLong(d->wake_fd);
}

static PyObject *take(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "On:take", &capsule, &limit))
        return NULL;
    Drain *d = handle(capsule);
    if (d == NULL)
        return NULL;
    int error = 0;
    pthread_mutex_lock(&d->lock);
    if (d->out_pos >= d->out.len) {
        Records taken = d->in;
        d->in = d->out;
        d->in.len = 0;
        d->out = taken;
        d->out_pos = 0;
        pthread_cond_signal(&d->room);
    }
    pthread_mutex_unlock(&d->lock);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    while (limit-- > 0 && d->out_pos < d->out.len) {
        uint32_t n;
        memcpy(&n, d->out.data + d->out_pos, sizeof(n));
        PyObject *datagram = PyBytes_FromStringAndSize(d->out.data + d->out_pos + sizeof(n), n);
        if (datagram == NULL || PyList_Append(list, datagram) < 0) {
            Py_XDECREF(datagram);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(datagram);
        d->out_pos += sizeof(n) + n;
    }
    pthread_mutex_lock(&d->lock);
    if (d->out_pos >= d->out.len && d->in.len == 0) {
        error = d->error;
        if (d->signalled && !error) {
            uint64_t count;
            if (read(d->wake_fd, &count, sizeof(count)) == sizeof(count))
                d->signalled = 0;
        }
    }
    pthread_mutex_unlock(&d->lock);
    if (error && PyList_GET_SIZE(list) == 0) {
        Py_DECREF(list);
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return list;
}

static PyObject *realtime(PyObject *module, PyObject *capsule)
{
    Drain *d = handle(capsule);
    if (d == NULL)
        return NULL;
    int result;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&d->lock);
    while (!d->started && d->running)
        pthread_cond_wait(&d->room, &d->lock);
    result = d->realtime;
    pthread_mutex_unlock(&d->lock);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(result);
}

static PyObject *stop(PyObject *module, PyObject *capsule)
{
    Drain *d = handle(capsule);
    if (d == NULL)
        return NULL;
    stop_thread(d);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS, "start(fd, capacity) -> handle: a thread that empties fd's queue into memory."},
    {"wake_fd", wake_fd, METH_O, "wake_fd(handle) -> int: readable while datagrams wait."},
    {"take", take, METH_VARARGS, "take(handle, limit) -> list[bytes]: up to limit waiting datagrams."},
    {"realtime", realtime, METH_O, "realtime(handle) -> bool: whether the thread runs SCHED_FIFO."},
    {"stop", stop, METH_O, "stop(handle): end the thread; what it read stays for take()."},
    {NULL, NULL, 0, NULL},
};

PyMODINIT_FUNC PyInit__drain(void)
{
    return module_of_functions("_drain", "A thread that empties a Unix datagram socket's short kernel queue into memory.",
                               methods);
}
