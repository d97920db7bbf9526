/*
 * stages.receiver.listeners._recv_many: read a burst of datagrams with recvmmsg(2).
 *
 * recv_many(fd, limit) -> list[bytes]: up to `limit` datagrams already waiting on the non-blocking
 * datagram socket `fd`, each whole, in arrival order, without blocking; [] when none wait.
 *
 * Why C: one recv() from Python costs a system call, a 64 KiB allocation and a resize per datagram,
 * more than parsing a one-line datagram. recvmmsg takes up to SLOTS datagrams per system call and
 * each becomes a bytes object of its own size. Optional: datagram.py falls back to sock.recv when
 * this module was not built, with the same results.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>

#include "datagram_slots.h"

static char *slot_memory;  /* SLOTS * SLOT_BYTES, touched only as far as datagrams fill it */
static struct mmsghdr msgs[SLOTS];
static struct iovec iovs[SLOTS];

static int ensure_slots(void)
{
    if (slot_memory != NULL)
        return 0;
    slot_memory = PyMem_RawMalloc((size_t)SLOTS * SLOT_BYTES);
    if (slot_memory == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    lay_out_slots(iovs, slot_memory);
    return 0;
}

/* Appends msgs[0..n) to out; -1 with an exception set on failure. */
static int append_datagrams(PyObject *out, int n)
{
    for (int i = 0; i < n; i++) {
        PyObject *datagram = PyBytes_FromStringAndSize(iovs[i].iov_base, (Py_ssize_t)msgs[i].msg_len);
        if (datagram == NULL)
            return -1;
        int failed = PyList_Append(out, datagram);
        Py_DECREF(datagram);
        if (failed)
            return -1;
    }
    return 0;
}

static PyObject *recv_many(PyObject *module, PyObject *args)
{
    int fd;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "in:recv_many", &fd, &limit))
        return NULL;
    if (ensure_slots() < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t left = limit;
    while (left > 0) {
        unsigned int want = left < SLOTS ? (unsigned int)left : SLOTS;
        ready_slots(msgs, iovs, want);
        int n = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    goto fail;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (PyList_GET_SIZE(out) > 0)
                break;  /* hand on what was read; the next call meets the error again */
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        if (append_datagrams(out, n) < 0)
            goto fail;
        left -= n;
        if ((unsigned int)n < want)
            break;  /* the socket is empty */
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"recv_many", recv_many, METH_VARARGS,
     "recv_many(fd, limit) -> list[bytes]: up to limit datagrams waiting on fd, without blocking."},
    {NULL, NULL, 0, NULL},
};

PyMODINIT_FUNC PyInit__recv_many(void)
{
    return module_of_functions("_recv_many",
                               "A burst of datagrams per system call (recvmmsg) for the receiver's datagram listeners.",
                               methods);
}
