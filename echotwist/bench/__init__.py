"""The load generator: C{python -m echotwist.bench [options] host [port]}.

Plain-code parts (no I/O): L{echotwist.bench.content} (what each message
holds and how a wrong echo is classified), L{echotwist.bench.schedule}
(the open-loop send schedule), L{echotwist.bench.results} (histograms,
the report and its JSON), L{echotwist.bench.hlog} (interval logs and
merging).  L{echotwist.bench.load} holds the protocols that drive a
server; L{echotwist.bench.cli} the command line.
"""
