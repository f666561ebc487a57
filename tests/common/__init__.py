"""Python helpers shared by the test suites (tests/integration, tests/chaos, tests/soak).

    runs.py  processes of a long run: children that die with the runner, one child runner per
             backend, the event log, Ctrl-C/SIGTERM handling
    tcp.py   loopback TCP: a listening socket served by a thread, a relay (proxy) with hooks
             for delaying and dropping data, quiet socket close

Importers put tests/ on sys.path and `from common import runs, tcp`.
"""
