"""The ``npse`` commands, one module each (docs/README.md; CONTRIBUTING.md, "Add a command").

Every command module exposes the same three things, and :mod:`npse.cli` lists the modules in one
table:

    HELP                     one line for ``npse --help``
    add_arguments(parser)    its options (the shared types and groups: :mod:`.options`)
    run(args) -> int         what it does; the exit status

A command module stays cheap to import (``npse --help`` imports them all): the library it drives
is imported inside ``run``.
"""
