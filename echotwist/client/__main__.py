"""C{python -m echotwist.client [options] host word [port]}."""

from echotwist.client.cli import run

if __name__ == "__main__":
    run()
