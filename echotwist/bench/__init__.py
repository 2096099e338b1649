"""The load generator: C{python -m echotwist.bench [options] host [port]}.

Plain code (no I/O):
  - L{echotwist.bench.arguments}: the command lines, option checks, source
    addresses and each load process's share and options;
  - L{echotwist.bench.content}: what each message holds and how a wrong
    echo is classified;
  - L{echotwist.bench.schedule}: the open-loop send schedule, and how
    long to sleep before a send;
  - L{echotwist.bench.results}: histograms, the results, their report,
    JSON and CSV (a load process's too), the percentile spectrum;
  - L{echotwist.bench.compare}: two JSON reports side by side.

With I/O:
  - L{echotwist.bench.load}: the protocols that drive a server and time it;
  - L{echotwist.bench.timer}: the open loop's wake-ups (a Linux timerfd);
  - L{echotwist.bench.processes}: the open-file limit, SIGINT/SIGTERM, and
    the C{--processes} load processes;
  - L{echotwist.bench.report}: the report, error lines, progress line and
    interval log files;
  - L{echotwist.bench.hlog}: interval logs, written and merged;
  - L{echotwist.bench.plot}: the C{--plot} latency chart (matplotlib);
  - L{echotwist.bench.cli}: L{run<echotwist.bench.cli.run>}, which puts
    them together (C{python -m echotwist.bench} runs it).
"""
