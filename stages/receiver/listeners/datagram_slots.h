/*
 * What the two compiled datagram readers (recv_many.c, drain.c) share: the recvmmsg slots (how many
 * datagrams one call takes, how large each may be, how the slots lie in one block of memory and are
 * made ready for a call) and the maker of a module of plain functions. The includer defines
 * _GNU_SOURCE and PY_SSIZE_T_CLEAN and includes Python.h first.
 */
#ifndef PYSTATSD_DATAGRAM_SLOTS_H
#define PYSTATSD_DATAGRAM_SLOTS_H

#include <Python.h>

#include <string.h>
#include <sys/socket.h>

/* Datagrams per recvmmsg call. */
#define SLOTS 64
/* Larger than any UDP payload (65,507 bytes over IPv4), as in datagram.py: never cut short. */
#define SLOT_BYTES 65536

/* Points iovs[0..SLOTS) at consecutive SLOT_BYTES pieces of `memory` (SLOTS * SLOT_BYTES bytes). */
static inline void lay_out_slots(struct iovec *iovs, char *memory)
{
    for (int i = 0; i < SLOTS; i++) {
        iovs[i].iov_base = memory + (size_t)i * SLOT_BYTES;
        iovs[i].iov_len = SLOT_BYTES;
    }
}

/* Makes msgs[0..n) ready for a recvmmsg call, each on its own slot: a call writes into the headers. */
static inline void ready_slots(struct mmsghdr *msgs, struct iovec *iovs, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
}

static PyModuleDef functions_module = {PyModuleDef_HEAD_INIT};

/* The module `module_name` of `methods` (single-phase init: one per process, as keytable.h's). */
static inline PyObject *module_of_functions(const char *module_name, const char *doc, PyMethodDef *methods)
{
    functions_module.m_name = module_name;
    functions_module.m_doc = doc;
    functions_module.m_size = -1;
    functions_module.m_methods = methods;
    return PyModule_Create(&functions_module);
}

#endif
