"""A minimal io_uring for the experiments, in ctypes and mmap: no binding to install.

Only what an echo server needs: set up a ring (optionally with a kernel
thread polling the submission queue), queue submission entries, submit and
wait in one C{io_uring_enter}, read completions, and register a ring of
provided buffers for receives that pick their own buffer (multishot
receive).  The layouts are those of C{<linux/io_uring.h>}; the ring is
shared memory that the kernel reads and writes, and on x86-64 plain loads
and stores in program order are the barriers that C{liburing} needs there
(C{liburing}'s own x86 barriers are compiler barriers only).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427

IORING_OFF_SQ_RING = 0
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0

IORING_SETUP_SQPOLL = 1 << 1
IORING_SETUP_SQ_AFF = 1 << 2
IORING_SETUP_CQSIZE = 1 << 3
IORING_SETUP_COOP_TASKRUN = 1 << 8
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13

IORING_ENTER_GETEVENTS = 1 << 0
IORING_ENTER_SQ_WAKEUP = 1 << 1
IORING_SQ_NEED_WAKEUP = 1 << 0

IORING_OP_ACCEPT = 13
IORING_OP_SEND = 26
IORING_OP_RECV = 27

IOSQE_BUFFER_SELECT = 1 << 5
IORING_RECV_MULTISHOT = 1 << 1
IORING_ACCEPT_MULTISHOT = 1 << 0

IORING_CQE_F_BUFFER = 1 << 0
IORING_CQE_F_MORE = 1 << 1
IORING_CQE_BUFFER_SHIFT = 16

IORING_REGISTER_PBUF_RING = 22

# struct io_uring_sqe, 64 bytes: opcode, flags, ioprio, fd, off, addr, len,
# op flags (msg_flags), user_data, buf_index/buf_group, personality,
# splice_fd_in, addr3, pad.
SQE = struct.Struct("<BBHiQQIIQHHiQQ")
# struct io_uring_cqe, 16 bytes: user_data, res, flags.
CQE = struct.Struct("<QiI")
# struct io_uring_buf, 16 bytes: addr, len, bid (the resv field that follows
# is the ring's tail in the first entry, and is left alone).
BUF = struct.Struct("<QIH")
BUF_ENTRY = 16
BUF_RING_TAIL = 14


class _SqOffsets(ctypes.Structure):
    _fields_ = (
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    )


class _CqOffsets(ctypes.Structure):
    _fields_ = (
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    )


class _Params(ctypes.Structure):
    _fields_ = (
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", _SqOffsets),
        ("cq_off", _CqOffsets),
    )


class _BufReg(ctypes.Structure):
    _fields_ = (
        ("ring_addr", ctypes.c_uint64),
        ("ring_entries", ctypes.c_uint32),
        ("bgid", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("resv", ctypes.c_uint64 * 3),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def addressOf(buffer: mmap.mmap) -> int:
    """The address of C{buffer}'s first byte (C{buffer} must stay alive)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class Ring:
    """An io_uring instance: its submission and completion queues.

    L{prepare} writes a submission entry; L{enter} submits every entry
    written since the last call and waits for at least C{wait} completions
    (one system call); L{completions} returns every completion that is
    there and frees their slots.
    """

    def __init__(
        self, entries: int, *, flags: int = 0, sqThreadCpu: int = 0, idleMs: int = 0
    ) -> None:
        params = _Params()
        params.flags = flags | IORING_SETUP_CQSIZE
        params.cq_entries = entries * 4
        params.sq_thread_cpu = sqThreadCpu
        params.sq_thread_idle = idleMs
        self.fd = _check(_syscall(SYS_IO_URING_SETUP, entries, ctypes.byref(params)))
        self.flags = flags
        if not params.features & IORING_FEAT_SINGLE_MMAP:
            raise OSError("io_uring without IORING_FEAT_SINGLE_MMAP")
        sq, cq = params.sq_off, params.cq_off
        size = max(
            sq.array + params.sq_entries * 4,
            cq.cqes + params.cq_entries * CQE.size,
        )
        self._rings = mmap.mmap(self.fd, size, offset=IORING_OFF_SQ_RING)
        self._sqes = mmap.mmap(
            self.fd, params.sq_entries * SQE.size, offset=IORING_OFF_SQES
        )
        self._words = memoryview(self._rings).cast("I")
        self._sqHead, self._sqTail = sq.head // 4, sq.tail // 4
        self._sqFlags = sq.flags // 4
        self._sqMask = params.sq_entries - 1
        self._sqEntries = params.sq_entries
        self._cqHead, self._cqTail = cq.head // 4, cq.tail // 4
        self._cqMask = params.cq_entries - 1
        self._cqes = cq.cqes
        # Submission slot i always holds entry i: the indirection array is
        # the identity, written once.
        for index in range(params.sq_entries):
            self._words[sq.array // 4 + index] = index
        self._tail = self._words[self._sqTail]
        self._unsubmitted = 0
        self.enters = 0

    def prepare(
        self,
        opcode: int,
        fd: int,
        userData: int,
        *,
        addr: int = 0,
        length: int = 0,
        sqeFlags: int = 0,
        ioprio: int = 0,
        opFlags: int = 0,
        bufGroup: int = 0,
    ) -> None:
        """Write one submission entry; L{enter} submits it."""
        if (self._tail - self._words[self._sqHead]) & 0xFFFFFFFF >= self._sqEntries:
            self.enter(0)
        SQE.pack_into(
            self._sqes,
            (self._tail & self._sqMask) * SQE.size,
            opcode,
            sqeFlags,
            ioprio,
            fd,
            0,
            addr,
            length,
            opFlags,
            userData,
            bufGroup,
            0,
            0,
            0,
            0,
        )
        self._tail = (self._tail + 1) & 0xFFFFFFFF
        self._words[self._sqTail] = self._tail
        self._unsubmitted += 1

    def enter(self, wait: int) -> None:
        """Submit what was prepared and wait for C{wait} completions, in one call.

        With a polling kernel thread (C{IORING_SETUP_SQPOLL}) the thread
        picks submissions up by itself: no call is made unless it must be
        woken, or there is a completion to wait for and none is there.
        """
        toSubmit, self._unsubmitted = self._unsubmitted, 0
        flags = IORING_ENTER_GETEVENTS if wait else 0
        if self.flags & IORING_SETUP_SQPOLL:
            if self._words[self._sqFlags] & IORING_SQ_NEED_WAKEUP:
                flags |= IORING_ENTER_SQ_WAKEUP
            elif not wait or self._words[self._cqTail] != self._words[self._cqHead]:
                return
        elif not toSubmit and not wait:
            return
        self.enters += 1
        while True:
            result = _syscall(
                SYS_IO_URING_ENTER, self.fd, toSubmit, wait, flags, None, 0
            )
            if result >= 0:
                return
            if ctypes.get_errno() != 4:  # EINTR: the signal handler ends us.
                _check(result)

    def completions(self) -> list[tuple[int, int, int]]:
        """Every completion there now, as (user_data, res, flags); slots freed."""
        words = self._words
        head = words[self._cqHead]
        tail = words[self._cqTail]
        if head == tail:
            return []
        rings, mask, base, unpack = (
            self._rings,
            self._cqMask,
            self._cqes,
            CQE.unpack_from,
        )
        done = [
            unpack(rings, base + (index & mask) * CQE.size)
            for index in range(head, tail if tail > head else tail + (1 << 32))
        ]
        words[self._cqHead] = tail
        return done


class BufferRing:
    """A ring of provided buffers (group C{group}) that receives pick from.

    C{count} buffers of C{size} bytes in one anonymous mapping; a
    completion with C{IORING_CQE_F_BUFFER} names the buffer it filled, which
    belongs to the program until L{give} returns it to the kernel.
    """

    def __init__(self, ring: Ring, group: int, count: int, size: int) -> None:
        self.group, self.count, self.size = group, count, size
        self.memory = mmap.mmap(-1, count * size)
        self.base = addressOf(self.memory)
        self._entries = mmap.mmap(-1, count * BUF_ENTRY)
        self._mask = count - 1
        self._tail = 0
        registration = _BufReg(
            ring_addr=addressOf(self._entries), ring_entries=count, bgid=group
        )
        _check(
            _syscall(
                SYS_IO_URING_REGISTER,
                ring.fd,
                IORING_REGISTER_PBUF_RING,
                ctypes.byref(registration),
                1,
            )
        )
        for bid in range(count):
            self.give(bid)

    def give(self, bid: int) -> None:
        """Return buffer C{bid} to the kernel."""
        BUF.pack_into(
            self._entries,
            (self._tail & self._mask) * BUF_ENTRY,
            self.base + bid * self.size,
            self.size,
            bid,
        )
        self._tail = (self._tail + 1) & 0xFFFF
        struct.pack_into("<H", self._entries, BUF_RING_TAIL, self._tail)
