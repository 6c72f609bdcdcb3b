"""The static HTML site: one index with a table per board and protocol, a page per row with its provenance,
nothing fetched from the network, no machine paths, byte-identical rebuilds."""

from __future__ import annotations

import re

import pytest

from results_helpers import accuracy
from wdro_finetune.cli import main
from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.rows import build_rows
from wdro_finetune.results.site import SweepRef


@pytest.fixture
def site(make_record, write_records, tmp_path):
    recs = [make_record("r1", {"clean_acc": accuracy(980, 1000), "autoattack_acc": accuracy(870, 1000),
                               "w2_acc@1/20": accuracy(950, 1000)}, aa="standard", method="trades",
                        checkpoint_sha256="a" * 64, job_id="job123", data_file="/machine/data/mnist_test.npz",
                        checkpoint="/machine/runs/x/model.safetensors"),
            make_record("r2", {"clean_acc": accuracy(990, 1000), "autoattack_acc": accuracy(880, 1000)},
                        method="pretrained", training=None, checkpoint_sha256="b" * 64)]
    folder = write_records(recs)
    build_leaderboards(folder, tmp_path / "lb", html_dir=tmp_path / "site",
                       sweep=SweepRef("leaderboards/sweep.yaml", frozenset({"job123"})))
    return folder, tmp_path / "site"


def test_index_has_one_table_per_protocol_standard_first_with_links_to_row_pages(site):
    folder, out = site
    index = (out / "index.html").read_text()
    assert index.index("Standard AutoAttack (apgd-ce") < index.index("Fast AutoAttack (apgd-ce, apgd-t)")
    assert index.count('<table class="board sortable">') == 2
    rows = build_rows(folder)[("mnist", "Linf")]
    for row in rows:
        assert f'href="rows/{row.row_id}.html"' in index and (out / "rows" / f"{row.row_id}.html").is_file()
    assert '<img src="mnist_Linf_robustness.png"' in index and (out / "mnist_Linf_robustness.png").is_file()


def test_row_page_shows_provenance_and_the_reproducing_command_without_machine_paths(site):
    folder, out = site
    row = next(r for r in build_rows(folder)[("mnist", "Linf")] if r.fields["method"] == "trades")
    page = (out / "rows" / f"{row.row_id}.html").read_text()
    assert "a" * 64 in page and "r1" in page and "mnist_test.npz" in page
    assert "wdro-finetune sweep leaderboards/sweep.yaml --job job123" in page
    assert "reweight" in page  # the resolved training config of the committed record shape
    assert "/machine/" not in page
    other = next(r for r in build_rows(folder)[("mnist", "Linf")] if r.fields["method"] == "pretrained")
    page = (out / "rows" / f"{other.row_id}.html").read_text()
    assert "wdro-finetune evaluate \\\n    --model mnist-smallcnn" in page and "--metrics autoattack,clean" in page


def test_site_loads_nothing_from_the_network(site):
    _, out = site
    for path in out.rglob("*"):
        if path.suffix in (".html", ".css", ".js"):
            text = path.read_text()
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
            assert "@import" not in text and "fetch(" not in text and "XMLHttpRequest" not in text


def test_site_rebuild_is_byte_identical_and_the_cli_writes_the_same(site, tmp_path):
    folder, out = site
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["leaderboard", "--records", str(folder), "--out", str(tmp_path / "lb2"), "--html",
                 str(tmp_path / "site2")]) == 0
    again = {p.relative_to(tmp_path / "site2"): p.read_bytes() for p in (tmp_path / "site2").rglob("*")
             if p.is_file()}
    assert again.keys() == first.keys()
    changed = [p for p in first if first[p] != again[p]]
    assert all(p.parts[0] == "rows" for p in changed)  # only the sweep command differs (no --sweep here)


def test_a_row_that_no_longer_exists_loses_its_page(make_record, write_records, tmp_path):
    folder = write_records([make_record("a", {"autoattack_acc": accuracy(5, 10)}, checkpoint_sha256="x")])
    build_leaderboards(folder, tmp_path / "lb", html_dir=tmp_path / "site")
    old = set((tmp_path / "site" / "rows").glob("*.html"))
    (folder / "records.jsonl").write_text("")
    write_records([make_record("b", {"autoattack_acc": accuracy(5, 10)}, checkpoint_sha256="y")])
    build_leaderboards(folder, tmp_path / "lb", html_dir=tmp_path / "site")
    new = set((tmp_path / "site" / "rows").glob("*.html"))
    assert len(old) == len(new) == 1 and old != new
