/*
 * The echo path in C: the fast epoll reactor's dispatch loop and the
 * server transports' send-at-once write (echotwist.internals.speedups
 * says which Python code each copies; test_writepath and test_fastepoll
 * run the same tests against both).  A real socket.socket is read and
 * sent to with recv and send directly, as its methods do on a
 * non-blocking socket (Twisted's always are); any other socket object
 * (the unit tests' fakes) through its methods.
 *
 * Optional: setup.py builds it when a C compiler is there, and the Python
 * path serves when it is not.  Linux only (epoll).
 *
 * Twisted internals relied on, as by the Python code it mirrors (pinned
 * by the tests): abstract.FileDescriptor.write as the buffered write; the
 * attributes writepath.writeAtOnce reads; that the epoll reactor's
 * selectables are keyed by descriptor and registered with that
 * descriptor as the event's data.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Interned attribute names, made once at import. */
static PyObject *sProtocol, *sDataReceived, *sDoRead, *sSocket, *sSend, *sRecv,
    *sFileno,
    *sBufferSize, *sDataBuffer,
    *sTempDataLen, *sConnected, *sDisconnecting, *sWriteDisconnecting,
    *sAborting, *sTLS;

/* abstract.FileDescriptor.write: Twisted's buffered write. */
static PyObject *bufferedWrite;

/* 1 if the attribute is true, 0 if false, -1 with an exception set. */
static int
attributeIsTrue(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    int result = PyObject_IsTrue(value);
    Py_DECREF(value);
    return result;
}

/* 1 if a write to conn must go through Twisted's buffer, 0 if it may be
 * sent now, -1 with an exception set: writepath._isIdleOpen, negated. */
static int
mustBuffer(PyObject *conn)
{
    int r;
    if ((r = attributeIsTrue(conn, sDataBuffer)) != 0) {
        return r;
    }
    if ((r = attributeIsTrue(conn, sTempDataLen)) != 0) {
        return r;
    }
    if ((r = attributeIsTrue(conn, sConnected)) <= 0) {
        return r < 0 ? -1 : 1;
    }
    if ((r = attributeIsTrue(conn, sDisconnecting)) != 0) {
        return r;
    }
    if ((r = attributeIsTrue(conn, sWriteDisconnecting)) != 0) {
        return r;
    }
    if ((r = attributeIsTrue(conn, sAborting)) != 0) {
        return r;
    }
    return attributeIsTrue(conn, sTLS);
}

/* socket.socket: its own sockets are sent to and read from here directly,
 * as its send and recv methods do; any other socket object through its
 * methods. */
static PyTypeObject *socketType;

/* The descriptor to send to or read from here, or -1 (no exception set)
 * if the socket's methods must do it: another class, or closed. */
static int
directDescriptor(PyObject *sock)
{
    if (Py_TYPE(sock) != socketType) {
        return -1;
    }
    PyObject *number = PyObject_CallMethodNoArgs(sock, sFileno);
    if (number == NULL) {
        /* The method call says what is wrong. */
        PyErr_Clear();
        return -1;
    }
    long fd = PyLong_AsLong(number);
    Py_DECREF(number);
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Clear();
        return -1;
    }
    return (int)fd;
}

/* After a call failed with EINTR: 0 to retry (Python's signal handlers
 * have run, as the socket methods run them), -1 if one raised. */
static int
interrupted(void)
{
    return PyErr_CheckSignals();
}

/* sock.send(data): the count sent, or NULL with OSError set. */
static PyObject *
sendSome(PyObject *sock, PyObject *data)
{
    int fd = PyBytes_CheckExact(data) ? directDescriptor(sock) : -1;
    if (fd < 0) {
        return PyObject_CallMethodOneArg(sock, sSend, data);
    }
    ssize_t sent;
    /* MSG_DONTWAIT: never waits, even on a socket made blocking, so the
     * GIL is kept for the call. */
    while ((sent = send(fd, PyBytes_AS_STRING(data),
                        (size_t)PyBytes_GET_SIZE(data), MSG_DONTWAIT)) < 0 &&
           errno == EINTR) {
        if (interrupted() < 0) {
            return NULL;
        }
    }
    if (sent < 0) {
        /* As the method raises: BlockingIOError for EAGAIN, and so on. */
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(sent);
}

/* sock.recv(size): the bytes read, or NULL with OSError set. */
static PyObject *
receive(PyObject *sock, PyObject *size)
{
    int fd = directDescriptor(sock);
    if (fd < 0) {
        return PyObject_CallMethodOneArg(sock, sRecv, size);
    }
    Py_ssize_t capacity = PyLong_AsSsize_t(size);
    if (capacity < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        }
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, capacity);
    if (data == NULL) {
        return NULL;
    }
    ssize_t received;
    while ((received = recv(fd, PyBytes_AS_STRING(data), (size_t)capacity,
                            MSG_DONTWAIT)) < 0 &&
           errno == EINTR) {
        if (interrupted() < 0) {
            Py_DECREF(data);
            return NULL;
        }
    }
    if (received < 0) {
        Py_DECREF(data);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (received < capacity && _PyBytes_Resize(&data, received) < 0) {
        return NULL;
    }
    return data;
}

static PyObject *
callBufferedWrite(PyObject *conn, PyObject *data)
{
    PyObject *args[2] = {conn, data};
    return PyObject_Vectorcall(bufferedWrite, args, 2, NULL);
}

/* writeAtOnce(connection, data): writepath.writeAtOnce, statement for
 * statement. */
static PyObject *
writeAtOnce(PyObject *conn, PyObject *data)
{
    int buffer = mustBuffer(conn);
    if (buffer < 0) {
        return NULL;
    }
    if (buffer) {
        return callBufferedWrite(conn, data);
    }
    PyObject *sock = PyObject_GetAttr(conn, sSocket);
    if (sock == NULL) {
        return NULL;
    }
    PyObject *result = sendSome(sock, data);
    Py_DECREF(sock);
    Py_ssize_t sent;
    if (result == NULL) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
            PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            sent = 0;
        } else if (PyErr_ExceptionMatches(PyExc_OSError)) {
            /* A reset or similar: Twisted's own write path meets the same
             * error on its next attempt and reports the lost connection
             * its usual way. */
            PyErr_Clear();
            return callBufferedWrite(conn, data);
        } else {
            return NULL;
        }
    } else {
        sent = PyLong_AsSsize_t(result);
        Py_DECREF(result);
        if (sent == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    Py_ssize_t length = PyObject_Size(data);
    if (length < 0) {
        return NULL;
    }
    if (sent >= length) {
        Py_RETURN_NONE;
    }
    PyObject *rest = PySequence_GetSlice(data, sent, PY_SSIZE_T_MAX);
    if (rest == NULL) {
        return NULL;
    }
    result = callBufferedWrite(conn, rest);
    Py_DECREF(rest);
    return result;
}

static PyMethodDef writeAtOnceDef = {
    "writeAtOnce",
    (PyCFunction)writeAtOnce,
    METH_O,
    "writeAtOnce($self, data, /)\n--\n\n"
    "Write data, sending it at once if nothing is buffered "
    "(echotwist.internals.writepath.pythonWriteAtOnce in C).",
};

/*
 * Dispatcher: one per reactor.  poll(epfd, timeout, maxevents) waits once
 * and dispatches every ready descriptor, as FastEPollReactor.doPoll.
 */
typedef struct {
    PyObject_HEAD
    PyObject *selectables; /* the reactor's _selectables dict */
    PyTypeObject *leanType; /* read in C when only readable */
    PyObject *other;      /* other(selectable, fd, events) */
    PyObject *disconnect; /* disconnect(selectable, why, isRead) */
    PyObject *failed;     /* failed(selectable, fd, exception) */
    PyObject *done;       /* main.CONNECTION_DONE */
    PyObject *lost;       /* main.CONNECTION_LOST */
} Dispatcher;

static int
Dispatcher_traverse(Dispatcher *self, visitproc visit, void *arg)
{
    Py_VISIT(self->selectables);
    Py_VISIT(self->leanType);
    Py_VISIT(self->other);
    Py_VISIT(self->disconnect);
    Py_VISIT(self->failed);
    Py_VISIT(self->done);
    Py_VISIT(self->lost);
    return 0;
}

static int
Dispatcher_clear(Dispatcher *self)
{
    Py_CLEAR(self->selectables);
    Py_CLEAR(self->leanType);
    Py_CLEAR(self->other);
    Py_CLEAR(self->disconnect);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->done);
    Py_CLEAR(self->lost);
    return 0;
}

static void
Dispatcher_dealloc(Dispatcher *self)
{
    PyObject_GC_UnTrack(self);
    Dispatcher_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Dispatcher_init(Dispatcher *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"selectables", "leanType", "other", "disconnect",
                            "failed", "done", "lost", NULL};
    PyObject *selectables, *leanType, *other, *disconnect, *failed, *done,
        *lost;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "O!O!OOOOO", names, &PyDict_Type, &selectables,
            &PyType_Type, &leanType, &other, &disconnect, &failed, &done,
            &lost)) {
        return -1;
    }
    if (self->selectables != NULL) {
        /* poll may be running: what it uses must not change under it. */
        PyErr_SetString(PyExc_TypeError, "a Dispatcher is initialised once");
        return -1;
    }
    self->selectables = Py_NewRef(selectables);
    self->leanType = (PyTypeObject *)Py_NewRef(leanType);
    self->other = Py_NewRef(other);
    self->disconnect = Py_NewRef(disconnect);
    self->failed = Py_NewRef(failed);
    self->done = Py_NewRef(done);
    self->lost = Py_NewRef(lost);
    return 0;
}

/* The result of a call made for its effect: -1 if the call raised (the
 * exception left set), else 0 (the result released). */
static int
discardResult(PyObject *result)
{
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static int
callDisconnect(Dispatcher *self, PyObject *selectable, PyObject *why)
{
    PyObject *args[3] = {selectable, why, Py_True};
    return discardResult(
        PyObject_Vectorcall(self->disconnect, args, 3, NULL));
}

/* The protocol raised: KeyboardInterrupt goes on up (stopping the
 * reactor, as log.callWithLogger lets it); anything else goes to failed,
 * which logs it and drops the connection. */
static int
readFailed(Dispatcher *self, PyObject *selectable, int fd)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    /* Called as the Python version calls it, inside "except": with the
     * exception being handled (sys.exc_info(), implicit chaining). */
    PyObject *handled = PyErr_GetHandledException();
    PyErr_SetHandledException(value);
    PyObject *result = PyObject_CallFunction(self->failed, "OiO", selectable,
                                             fd, value);
    PyErr_SetHandledException(handled);
    Py_XDECREF(handled);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return discardResult(result);
}

/* LeanServer.doRead, and the disconnection _doReadOrWrite makes of its
 * result. */
static int
readLean(Dispatcher *self, PyObject *selectable, int fd)
{
    PyObject *sock = PyObject_GetAttr(selectable, sSocket);
    if (sock == NULL) {
        return readFailed(self, selectable, fd);
    }
    PyObject *size = PyObject_GetAttr(selectable, sBufferSize);
    if (size == NULL) {
        Py_DECREF(sock);
        return readFailed(self, selectable, fd);
    }
    PyObject *data = receive(sock, size);
    Py_DECREF(size);
    Py_DECREF(sock);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError)) {
            /* Nothing there after all. */
            PyErr_Clear();
            return 0;
        }
        if (PyErr_ExceptionMatches(PyExc_OSError)) {
            PyErr_Clear();
            return callDisconnect(self, selectable, self->lost);
        }
        return readFailed(self, selectable, fd);
    }
    int empty = PyObject_Not(data);
    if (empty != 0) {
        Py_DECREF(data);
        return empty < 0 ? readFailed(self, selectable, fd)
                         : callDisconnect(self, selectable, self->done);
    }
    PyObject *protocol = PyObject_GetAttr(selectable, sProtocol);
    if (protocol == NULL) {
        Py_DECREF(data);
        return readFailed(self, selectable, fd);
    }
    PyObject *result = PyObject_CallMethodOneArg(protocol, sDataReceived, data);
    Py_DECREF(protocol);
    Py_DECREF(data);
    if (result == NULL) {
        return readFailed(self, selectable, fd);
    }
    Py_DECREF(result);
    return 0;
}

/* Any other selectable that is only readable: its doRead, and the
 * disconnection _doReadOrWrite makes of a true result (as _dispatch). */
static int
readAny(Dispatcher *self, PyObject *selectable, int fd)
{
    PyObject *why = PyObject_CallMethodNoArgs(selectable, sDoRead);
    if (why == NULL) {
        return readFailed(self, selectable, fd);
    }
    int over = PyObject_IsTrue(why);
    int status = over < 0    ? readFailed(self, selectable, fd)
                 : over == 0 ? 0
                             : callDisconnect(self, selectable, why);
    Py_DECREF(why);
    return status;
}

static int
dispatchOther(Dispatcher *self, PyObject *selectable, int fd, uint32_t events)
{
    return discardResult(PyObject_CallFunction(self->other, "OiI", selectable,
                                               fd, (unsigned int)events));
}

/* select.epoll.poll's timeout: None waits for ever; else seconds, to
 * nanoseconds and then whole milliseconds, each rounded up (so as never
 * to wake early); a negative result waits for ever too. */
static int
timeoutMilliseconds(PyObject *timeout, int *ms)
{
    if (timeout == Py_None) {
        *ms = -1;
        return 0;
    }
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(seconds)) {
        PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
        return -1;
    }
    double nanoseconds = ceil(seconds * 1e9);
    if (!(nanoseconds > -9.2e18 && nanoseconds < 9.2e18)) {
        PyErr_SetString(PyExc_OverflowError, "timeout is too large");
        return -1;
    }
    long long whole = (long long)nanoseconds;
    /* Division truncates toward zero: the ceiling for negatives. */
    long long milliseconds =
        whole > 0 ? (whole + 999999) / 1000000 : whole / 1000000;
    if (milliseconds < INT_MIN || milliseconds > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "timeout is too large");
        return -1;
    }
    *ms = (int)milliseconds;
    return 0;
}

/* An int argument (PyLong_AsInt is Python 3.13's). */
static int
asInt(PyObject *number, int *out)
{
    long value = PyLong_AsLong(number);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < INT_MIN || value > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "not an int");
        return -1;
    }
    *out = (int)value;
    return 0;
}

static PyObject *
Dispatcher_poll(Dispatcher *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "poll(epfd, timeout, maxevents) takes 3 arguments");
        return NULL;
    }
    int epfd, timeout, maxevents;
    if (asInt(args[0], &epfd) < 0) {
        return NULL;
    }
    if (timeoutMilliseconds(args[1], &timeout) < 0) {
        return NULL;
    }
    if (asInt(args[2], &maxevents) < 0) {
        return NULL;
    }
    if (maxevents < 1) {
        maxevents = 1;
    }
    /* Allocated per call (as select.epoll does): a protocol may run the
     * reactor again from inside a dispatch. */
    struct epoll_event *events = PyMem_New(struct epoll_event, maxevents);
    if (events == NULL) {
        return PyErr_NoMemory();
    }
    int ready;
    Py_BEGIN_ALLOW_THREADS
    ready = epoll_wait(epfd, events, maxevents, timeout);
    Py_END_ALLOW_THREADS
    if (ready < 0) {
        int error = errno;
        PyMem_Free(events);
        if (error == EINTR) {
            /* As FastEPollReactor.doPoll: the reactor polls again (and
             * Python runs its signal handlers first). */
            Py_RETURN_NONE;
        }
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int status = 0;
    for (int i = 0; i < ready && status == 0; i++) {
        int fd = events[i].data.fd;
        uint32_t what = events[i].events;
        PyObject *key = PyLong_FromLong(fd);
        if (key == NULL) {
            status = -1;
            break;
        }
        /* A descriptor removed by an earlier event of this batch is
         * skipped, as EPollReactor does. */
        PyObject *selectable = PyDict_GetItemWithError(self->selectables, key);
        Py_DECREF(key);
        if (selectable == NULL) {
            status = PyErr_Occurred() ? -1 : 0;
            continue;
        }
        Py_INCREF(selectable);
        if (what != EPOLLIN) {
            status = dispatchOther(self, selectable, fd, what);
        } else if (Py_TYPE(selectable) == self->leanType) {
            status = readLean(self, selectable, fd);
        } else {
            status = readAny(self, selectable, fd);
        }
        Py_DECREF(selectable);
    }
    PyMem_Free(events);
    if (status < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Dispatcher_methods[] = {
    {"poll", (PyCFunction)(void (*)(void))Dispatcher_poll, METH_FASTCALL,
     "poll(epfd, timeout, maxevents): wait once on epfd (timeout in seconds, "
     "None for ever) for at most maxevents events and dispatch each."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DispatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "echotwist.internals._speedups.Dispatcher",
    .tp_doc = "Dispatcher(selectables, leanType, other, disconnect, failed, "
              "done, lost): the fast epoll reactor's dispatch loop.",
    .tp_basicsize = sizeof(Dispatcher),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Dispatcher_init,
    .tp_dealloc = (destructor)Dispatcher_dealloc,
    .tp_traverse = (traverseproc)Dispatcher_traverse,
    .tp_clear = (inquiry)Dispatcher_clear,
    .tp_methods = Dispatcher_methods,
};

static struct PyModuleDef speedupsModule = {
    PyModuleDef_HEAD_INIT,
    .m_name = "echotwist.internals._speedups",
    .m_doc = "The echo path in C (see echotwist.internals.speedups).",
    .m_size = -1,
};

static int
intern(PyObject **target, const char *name)
{
    *target = PyUnicode_InternFromString(name);
    return *target == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern(&sProtocol, "protocol") < 0 ||
        intern(&sDataReceived, "dataReceived") < 0 ||
        intern(&sDoRead, "doRead") < 0 ||
        intern(&sSocket, "socket") < 0 || intern(&sSend, "send") < 0 ||
        intern(&sRecv, "recv") < 0 || intern(&sFileno, "fileno") < 0 || intern(&sBufferSize, "bufferSize") < 0 ||
        intern(&sDataBuffer, "dataBuffer") < 0 ||
        intern(&sTempDataLen, "_tempDataLen") < 0 ||
        intern(&sConnected, "connected") < 0 ||
        intern(&sDisconnecting, "disconnecting") < 0 ||
        intern(&sWriteDisconnecting, "_writeDisconnecting") < 0 ||
        intern(&sAborting, "_aborting") < 0 || intern(&sTLS, "TLS") < 0) {
        return NULL;
    }
    PyObject *socketModule = PyImport_ImportModule("socket");
    if (socketModule == NULL) {
        return NULL;
    }
    socketType = (PyTypeObject *)PyObject_GetAttrString(socketModule, "socket");
    Py_DECREF(socketModule);
    if (socketType == NULL) {
        return NULL;
    }
    if (!PyType_Check(socketType)) {
        PyErr_SetString(PyExc_TypeError, "socket.socket is not a class");
        return NULL;
    }
    PyObject *abstract = PyImport_ImportModule("twisted.internet.abstract");
    if (abstract == NULL) {
        return NULL;
    }
    PyObject *fileDescriptor = PyObject_GetAttrString(abstract, "FileDescriptor");
    Py_DECREF(abstract);
    if (fileDescriptor == NULL) {
        return NULL;
    }
    bufferedWrite = PyObject_GetAttrString(fileDescriptor, "write");
    Py_DECREF(fileDescriptor);
    if (bufferedWrite == NULL) {
        return NULL;
    }
    if (PyType_Ready(&DispatcherType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedupsModule);
    if (module == NULL) {
        return NULL;
    }
    /* A method descriptor of object: as a class attribute it binds like a
     * Python function (connection.write(data)), and called plainly it
     * takes the connection first (writeAtOnce(connection, data)). */
    PyObject *write = PyDescr_NewMethod(&PyBaseObject_Type, &writeAtOnceDef);
    if (write == NULL || PyModule_AddObject(module, "writeAtOnce", write) < 0) {
        Py_XDECREF(write);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&DispatcherType);
    if (PyModule_AddObject(module, "Dispatcher", (PyObject *)&DispatcherType) < 0) {
        Py_DECREF(&DispatcherType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
