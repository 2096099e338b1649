"""C{twistd echo --workers N}: N processes share the TCP listening ports.

The twistd process becomes a supervisor (L{supervisor}).  Before
privileges are dropped it opens, for every worker and every C{tcp:},
C{tcp6:} or C{aiotcp:} endpoint (L{config.listenBinding}; others are
refused), a socket listening on the same address with C{SO_REUSEPORT}
(so a bind error ends start-up with one line and exit status 1, and
ports below 1024 work).  It then starts N worker processes (C{python -m
echotwist.workers}, L{worker}), hands each its own listening sockets as
inherited descriptors (named C{tcp:FD}, C{tcp6:FD}, or
C{aiotcp:FD}/C{aiotcp6:FD} for C{aiotcp:} ones) and the echo options on
its command line (L{config.workerOptions}).  A worker parses those with
the plugin's own C{Options} and serves with the service C{makeService}
builds for a single process (so idle timeout, connection limits, address
rules, the accept guard and the drain on SIGTERM are the same code), over
its adopted sockets: Twisted's TCP port serves the C{tcp} ones, the
asyncio loop's own server (L{echotwist.internals.aiotcp}) the C{aiotcp}
ones.  The kernel spreads new connections evenly over the sockets of the
group.  A worker reports on its file descriptor 3 when it serves; once
all have, the supervisor logs C{Listening on ...}.  Stopping the
supervisor (SIGTERM) sends SIGTERM to every worker, which drains its
connections for up to C{--shutdown-timeout} seconds and exits 0; the
supervisor waits for them all (SIGKILL L{config.STOP_GRACE} seconds
after the drain should have ended) and exits 0 too.

Workers run on the supervisor's kind of reactor
(L{supervisor.workerReactor}): uvloop under C{twistd -r uvloop},
Twisted's asyncio reactor under C{-r asyncio}, the fast epoll reactor
under C{-r fastepoll}, else Twisted's default reactor.  (A supervisor on
uvloop hears its workers exit through the SIGCHLD handler of
L{echotwist.internals.uvloopreactor}.)  Workers log to the supervisor's
standard output with their index as the log system (C{[worker1]}).
Each worker keeps its own statistics (and serves them with C{--metrics}
on a port of its own, L{config.workerMetrics}), and the limits apply per
worker: C{--max-connections 100} with 4 workers admits up to 400
connections in all (and C{--max-per-ip} likewise per worker).
"""
