"""The whole story, runnable: `python -m modelplane.demo` (what `make demo` runs) starts a server and the
three consumer services as processes of their own and walks two canary rollouts through their gates.

Nothing in the library imports this package; it imports only the clients, and runs the server as a command.
"""
