"""What every chapter's checks must satisfy, proven for all chapters at once.

The chapter modules in tests/chapters/ hold what is particular to a chapter
(torch as the oracle, known-correct alternatives, forbidden aliases).
"""
from __future__ import annotations

import pytest

from tests.conftest import ALL_STEMS, all_checks, all_mistakes, assert_mistake_caught, grade_impl, grader, reference


@pytest.mark.parametrize("stem,name", all_checks())
def test_reference_gets_full_marks_and_calls_nothing_forbidden(stem, name):
    result = grade_impl(stem, name, reference(stem)[grader(stem).checks[name].target])
    assert result.points == result.max_points
    assert result.passed == result.total


@pytest.mark.parametrize("stem,name,mistake", all_mistakes())
def test_known_mistake_loses_points_with_its_hint(stem, name, mistake):
    assert_mistake_caught(stem, name, mistake)


@pytest.mark.parametrize("stem,name", all_checks())
def test_every_check_has_at_least_three_known_mistakes(stem, name):
    assert len(grader(stem).checks[name].mistakes) >= 3


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_every_chapter_catalogues_code_with_several_mistakes(stem):
    """Real code has several bugs at once: each chapter has at least one combination
    (checks.combined), and test_known_mistake_loses_points_with_its_hint proves it gets a hint per part."""
    assert any(m.parts for c in grader(stem).checks.values() for m in c.mistakes)
