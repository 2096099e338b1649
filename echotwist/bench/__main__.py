"""C{python -m echotwist.bench}: see L{echotwist.bench.cli}."""

import sys


def main() -> None:
    """Run the bench; without its optional dependencies, say how to get them."""
    try:
        from echotwist.bench.cli import run
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in ("hdrh", "rich"):
            raise
        sys.stderr.write(
            f"echotwist.bench: error: needs {missing} (the 'bench' extra):"
            " pip install 'echotwist[bench]'\n"
        )
        raise SystemExit(1) from None
    run()


if __name__ == "__main__":
    main()
