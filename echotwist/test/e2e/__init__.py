"""End-to-end tests: the real C{twistd} and client as subprocesses on 127.0.0.1."""
