"""The README's published numbers are what the committed store (reports/paper/store) produces."""
from pathlib import Path

from kd_helpers.report import END, START
from kd_helpers.results import load_results


REPO = Path(__file__).resolve().parents[1]


def readme_block(start, end) -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index(start) + len(start):text.index(end)].strip()


def test_readme_results_and_experiments_are_what_the_committed_store_produces():
    """The README's published numbers come from reports/paper/store (committed), never typed."""
    from kd_helpers.report import XEND, XSTART, experiments_block, readme_results, readme_root
    root = readme_root("paper")
    df = load_results(root)
    assert not df.empty, f"{root} holds no published runs"
    assert readme_block(START, END) == readme_results(df, "paper", root).strip()
    assert readme_block(XSTART, XEND) == experiments_block(df, root).strip()
