"""``wdro-finetune leaderboard``: check the records and the output folders, then rebuild the CSV leaderboards
(and the static HTML site) from the records."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..results.leaderboard import build_leaderboards
from ..results.records import RECORDS_FILE, count_unreadable_lines, read_records
from ..utils.fileio import check_can_create_dir
from .options import LeaderboardOptions
from .sweep import sweep_ref


def leaderboard(options: LeaderboardOptions) -> list[Path]:
    """Write the boards of ``records`` to ``out`` (and the site to ``html``; ``sweep``: the sweep file that made
    the records, named in the site's reproducing commands); returns the files written."""
    records, out, html = options.records, options.out, options.html
    if not (Path(records) / RECORDS_FILE).is_file():
        raise UserError(f"no records at {Path(records) / RECORDS_FILE}")
    for folder in (out, html):
        if folder:
            check_can_create_dir(folder)
    bad = count_unreadable_lines(records)
    if bad and not read_records(records):  # an empty board from a damaged file would look like a result
        raise UserError(f"no readable record in {Path(records) / RECORDS_FILE} ({bad} unreadable lines)")
    sweep = sweep_ref(options.sweep) if options.sweep else None
    return build_leaderboards(records, out, html_dir=html, sweep=sweep)
