"""What a connection meets on the server, around L{echotwist.protocol}'s Echo.

Listening and shutdown services, limits, UDP echo, statistics and metrics.
"""
