"""C{python -m echotwist.bench}: see L{echotwist.bench.cli}."""

from echotwist.bench.cli import run

if __name__ == "__main__":
    run()
