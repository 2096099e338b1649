"""echotwist: an RFC 862 echo server for twistd and an echo client."""

__version__ = "0.1.0"


def versionText() -> str:
    """What C{--version} prints: echotwist's version, then Twisted's and Python's."""
    # Imported here: the package's import stays free of Twisted.
    import platform

    import twisted

    return (
        f"echotwist {__version__}"
        f" (Twisted {twisted.__version__}, Python {platform.python_version()})"
    )
