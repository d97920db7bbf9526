"""The repo's ``supervisord.conf`` made into the one a running instance uses: one function, for
``pystatsd run`` and for the tests' pipelines alike; and the programs file both include.

The template is the one source of truth for the programs and their options; rendering moves its
paths (the interpreter, the run directory, the home) and may change its process counts.

The programs file (:data:`PROGRAMS_FILE` in the run directory) is what ``pystatsd reshard`` adds to
the config supervisord runs, the repo's or a rendered one alike: the new shards' program, and the
old one's retirement (``numprocs = 0`` for the config's own, which supervisord merges into it, as
it merges every section an included file repeats). Neither config is edited, so a reshard works the
same under ``supervisord -c supervisord.conf`` and under ``pystatsd run``.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import sys
from pathlib import Path

#: The repo's supervisord.conf.
REPO_TEMPLATE = Path(__file__).resolve().parents[2] / "supervisord.conf"
#: Where a package (etc/packaging/build_tree.sh) puts its copy, inside the virtualenv.
INSTALLED_TEMPLATE = Path(sys.prefix) / "share" / "pystatsd" / "supervisord.conf"

#: The first line of a rendered config: pystatsd run writes it anew at each start.
GENERATED = "; Generated from pystatsd's supervisord.conf"
#: What supervisord's getIdentification answers when it runs a rendered config: ``pystatsd reshard``
#: then copies the shards' program from the run directory's config, else from the supervisord.conf
#: beside the run directory (the repo's, whose run directory is run/ beside it).
RENDERED_IDENTIFIER = "pystatsd-run"
#: The run directory's file both configs include (their [include] section names it).
PROGRAMS_FILE = "programs.conf"
PROGRAMS_HEADER = ("; Written by pystatsd reshard, emptied by pystatsd run: the shard programs it added to "
                   "supervisord.conf's, and the ones it retired (numprocs = 0).\n")
#: The process counts a render can override, as the template's [supervisord] environment names them.
PROCESS_COUNTS = {"shards": "PYSTATSD_SHARDS", "extra_receivers": "PYSTATSD_EXTRA_RECEIVERS"}


def supervisord_template() -> Path:
    """The repo's supervisord.conf when running from a checkout, else the installed package's copy."""
    return REPO_TEMPLATE if REPO_TEMPLATE.exists() else INSTALLED_TEMPLATE


class _CaseKeepingParser(configparser.RawConfigParser):
    """configparser's documented way to keep keys' case: an optionxform that changes nothing."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def conf_parser(text: str) -> configparser.RawConfigParser:
    """``text`` parsed as supervisord reads it: keys' case kept, ``%`` left alone."""
    parser = _CaseKeepingParser(comment_prefixes=(";", "#"), inline_comment_prefixes=None)
    parser.read_string(text)
    return parser


#: The programs a fleet tier (a config with an ``input:`` section) does not run: its input is Kafka.
RECEIVER_PROGRAMS = ("program:receiver", "program:receiver-extra")


def render_supervisord_conf(template: str, home: Path, python: str, run_dir: Path,
                            counts: dict[str, int | None], logs_to_terminal: bool = True,
                            receivers: bool = True) -> str:
    """``template`` with its paths made absolute for this install.

    ``%(here)s/.venv/bin/python`` becomes ``python``, ``%(here)s/run`` becomes ``run_dir`` and any
    other ``%(here)s`` becomes ``home``. With ``logs_to_terminal`` program log files become
    ``/dev/stdout`` and ``/dev/stderr`` (a foreground daemon's logs belong to whoever runs it: the
    journal under systemd); without, they stay the template's files under the run directory.
    ``counts`` (keys of :data:`PROCESS_COUNTS`) replace the template's process counts where not None.
    Without ``receivers`` the receiver programs are left out (a fleet tier).
    """
    parser = conf_parser(template)
    if not receivers:
        for section in RECEIVER_PROGRAMS:
            parser.remove_section(section)
    replace_paths(parser, [("%(here)s/.venv/bin/python", python), ("%(here)s/run", str(run_dir)),
                           ("%(here)s", str(home))])
    parser.set("supervisord", "identifier", RENDERED_IDENTIFIER)
    for section in parser.sections():
        if logs_to_terminal and section.startswith("program:"):
            for stream in ("stdout", "stderr"):
                if parser.has_option(section, f"{stream}_logfile"):
                    # /dev/stdout cannot rotate: supervisord wants maxbytes 0 for it.
                    parser.set(section, f"{stream}_logfile", f"/dev/{stream}")
                    parser.set(section, f"{stream}_logfile_maxbytes", "0")
    environment = parser.get("supervisord", "environment")
    for key, count in counts.items():
        if count is not None:
            variable = PROCESS_COUNTS[key]
            environment, found = re.subn(f'{variable}="\\d+"', f'{variable}="{count}"', environment)
            if not found:
                raise ValueError(f"supervisord.conf no longer sets {variable} in [supervisord] environment")
    parser.set("supervisord", "environment", environment)
    if os.geteuid() == 0 and not parser.has_option("supervisord", "user"):
        # Said, so that supervisord does not warn at every start that it runs as root without being told.
        parser.set("supervisord", "user", "root")
    return conf_text(parser)


def replace_paths(parser: configparser.RawConfigParser, substitutions: list[tuple[str, str]]) -> None:
    """Each ``(old, new)`` in order, in every value: ``new`` a path, as supervisord reads it."""
    # supervisord expands %(name)s in values: a literal % in a path is written %%.
    escaped = [(old, new.replace("%", "%%")) for old, new in substitutions]
    for section in parser.sections():
        for key, value in parser.items(section):
            for old, new in escaped:
                value = value.replace(old, new)
            parser.set(section, key, value)


def programs_text(parser: configparser.RawConfigParser) -> str:
    """The programs file's text: :data:`PROGRAMS_HEADER`, then ``parser``'s sections."""
    out = io.StringIO()
    out.write(PROGRAMS_HEADER)
    parser.write(out)
    return out.getvalue()


def conf_text(parser: configparser.RawConfigParser) -> str:
    """A rendered config's text, marked as pystatsd's (``pystatsd run`` writes it at each start)."""
    out = io.StringIO()
    out.write(f"{GENERATED}; edits are overwritten.\n")
    parser.write(out)
    return out.getvalue()
