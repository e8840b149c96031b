"""The ``videossl eval`` commands: one module per subcommand (``add_cli_arguments``, ``EPILOG``,
``run_cli``), each parsing its options and calling the library in :mod:`videossl.eval`; no command
imports another."""
