"""The echo client: one-shot echo and ping (C{python -m echotwist.client})."""
