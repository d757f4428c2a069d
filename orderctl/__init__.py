"""``orderctl``: the operators' command line over the ops API (and the order API).

See :mod:`orderctl.cli` for the commands and the exit codes.
"""
