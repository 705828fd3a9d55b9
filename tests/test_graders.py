"""Graders: math-verify against MATH500's own answers, exact integers, boxed extraction."""
import json
import threading
import time

import pytest

from mtalign_jax.eval.grading import (extract_boxed, extract_int, grade_exact_int, grade_math,
                                      normalise_answer)


@pytest.fixture(scope="module")
def math500(shared_dir):
    with open(shared_dir / "data" / "math500.jsonl") as f:
        return [json.loads(line) for line in f]


def test_math_verify_agrees_with_math500_reference_solutions(math500):
    start = time.perf_counter()
    agree = sum(grade_math(row["solution"], row["answer"]) for row in math500)
    seconds = time.perf_counter() - start
    print(f"math-verify graded 500 MATH500 reference solutions in {seconds:.1f} s: {agree} agree")
    assert len(math500) == 500
    assert agree >= 475  # >= 95% (500 measured)
    # Every reference solution has a boxed answer that the grader finds.
    assert all(extract_boxed(row["solution"]) is not None for row in math500)


def test_math_grader_rejects_other_problems_answers(math500):
    rows = math500[:100]
    wrong = [grade_math(row["solution"], rows[(i + 1) % 100]["answer"])
             for i, row in enumerate(rows) if rows[(i + 1) % 100]["answer"] != row["answer"]]
    assert len(wrong) >= 95 and sum(wrong) <= 2  # at most rare true equivalences ("x=5" vs "5")


@pytest.mark.parametrize("response, gold, expected", [
    ("so the answer is $\\boxed{\\dfrac{1}{2}}$.", "\\frac{1}{2}", True),
    ("$\\boxed{0.5}$", "\\frac12", True),
    ("$\\boxed{\\text{Evelyn}}$", "\\text{Evelyn}", True),
    ("$\\boxed{10\\%}$", "10", True),
    ("$\\boxed{(3, \\frac{\\pi}{2})}$", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("$\\boxed{3}$", "4", False),
    ("the answer is 4", "4", False),  # no boxed answer
    ("first \\boxed{4}, finally \\boxed{5}", "4", False),  # the last boxed counts
])
def test_grade_math_cases(response, gold, expected):
    assert grade_math(response, gold) is expected


def test_grade_math_off_the_main_thread():
    # math_verify's SIGALRM timeout cannot run in a thread: the grader must still work there.
    results = []
    thread = threading.Thread(target=lambda: results.append(grade_math("\\boxed{2/4}", "1/2")))
    thread.start()
    thread.join()
    assert results == [True]


@pytest.mark.parametrize("response, gold, expected", [
    ("She has 12 apples. Then 12 + 7 = 19. The answer is 19.", 19, True),
    ("12 + 7 = 19, so \\boxed{19} apples; 3 were red", 19, True),  # boxed wins over last int
    ("The total is 1,024 marbles.", 1024, True),
    ("x = -7", -7, True),
    ("19 apples and then 20", 19, False),  # the last integer counts
    ("\\boxed{19.5}", 19, False),
    ("no number here", 0, False),
    ("$\\boxed{\\frac{1}{2}}$", 0, False),
])
def test_grade_exact_int(response, gold, expected):
    assert grade_exact_int(response, gold) is expected


def test_extract_int():
    assert extract_int("\\boxed{1,234}.") == 1234
    assert extract_int("3 apples, 45 pears") == 45
    assert extract_int("nothing") is None


def test_extract_boxed_nesting():
    text = "a \\boxed{\\frac{1}{\\sqrt{2}}} and finally \\boxed{x^{2} + \\{1\\}}."
    assert extract_boxed(text) == "x^{2} + \\{1\\}"
    assert extract_boxed("only \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert extract_boxed("spaced \\boxed {5}") == "5"
    assert extract_boxed("nested \\boxed{\\boxed{7}}") == "\\boxed{7}"
    assert extract_boxed("unclosed \\boxed{3") is None
    assert extract_boxed("none here") is None


def test_normalise_answer():
    assert normalise_answer("$\\dfrac{1}{2}$.") == normalise_answer("\\frac{1}{2}")
    assert normalise_answer("90^\\circ") == "90"
    assert normalise_answer("\\text{(B)}") == "(b)"
