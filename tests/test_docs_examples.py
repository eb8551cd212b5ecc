"""Every Python example of the documentation site runs, against our simulators (see docs_examples)."""

from __future__ import annotations

import pytest

from tests.docs_examples import doc_pages, run_blocks

PAGES = doc_pages()


def test_the_examples_are_found():
    # The pages a newcomer reads first have examples; a parser that finds none would pass vacuously.
    for page in ('user/getting_started.rst', 'user/tcp_interface.rst', 'user/testing_agents.rst',
                 'user/socs_agents.rst', 'simulators/control.rst'):
        assert page in PAGES, sorted(PAGES)
    assert sum(len(blocks) for blocks in PAGES.values()) >= 12


@pytest.mark.timeout(180)
@pytest.mark.parametrize('page', sorted(PAGES))
def test_page_examples_run(page, tmp_path):
    problems = run_blocks(PAGES[page], tmp_path)
    assert not problems, '\n\n'.join(problems)
