"""Every use of Twisted's or asyncio's internals, and nothing else.

Each module here relies on something Twisted or asyncio does not promise
(private attributes, concrete classes, the order of their calls); each of
those is pinned by a test in C{echotwist.test}, so an upgrade that
changes one fails a test instead of corrupting an echo.  Nothing outside
this package touches an internal.
"""
