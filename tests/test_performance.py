"""What the runner's shortcuts must never change (docs/performance.md).

A verdict reused for an answer with the same digest is the verdict deciding it
afresh gives, and any change to what `decide_case` reads (a value's bits, its
dtype, shape or device, the error, a forbidden call) is decided afresh; results
read back one at a time from OUT are the results written.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from autograder.answer import Answer
from autograder.compare import decide_case
from autograder.grading import Grader, answer_digest
from autograder.results import StoredResults, SubmissionResult, write_result

STEM = "losses"


@pytest.fixture(scope="module")
def grader():
    return Grader(STEM, device="cpu")


def _student(ref: Answer, case) -> Answer:
    """The reference's answer as a student's would come: in the case's dtype."""
    values = {k: v.to(case.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in ref.values.items()}
    return Answer(values, dict(ref.devices), ref.error, list(ref.forbidden))


def test_a_reused_verdict_is_the_fresh_verdict(grader):
    for name, p in grader.prepared.items():
        for k, (case, ref, mistakes) in enumerate(zip(p.cases, p.reference, p.mistakes)):
            answers = [_student(ref, case)] + [_student(a, case) for _, a in mistakes]
            for ans in answers:
                fresh = decide_case(case, ans, ref, mistakes)
                first = grader._decide_case(name, k, case, ans, ref, mistakes)
                again = grader._decide_case(name, k, case, ans, ref, mistakes)
                assert first == fresh and again == fresh, (name, case.label)
                assert again is not first  # a copy: no result shares a verdict object with another


def test_any_change_to_what_is_decided_changes_the_digest(grader):
    p = grader.prepared["l1_loss"]
    case = next(c for c in p.cases if not c.shape_only)
    base = _student(p.reference[p.cases.index(case)], case)
    out = base.values["output"]
    flipped = out.clone()
    flipped.view(-1)[0] = torch.nextafter(flipped.view(-1)[0], torch.tensor(float("inf"), dtype=out.dtype))
    variants = [
        dataclasses.replace(base, values={**base.values, "output": flipped}),
        dataclasses.replace(base, values={**base.values, "output": out.double()}),
        dataclasses.replace(base, values={**base.values, "output": out.reshape(1, *out.shape)}),
        dataclasses.replace(base, values={**base.values, "output": float(out.reshape(-1)[0])}),
        dataclasses.replace(base, devices={**base.devices, "output": "meta"}),
        dataclasses.replace(base, error="RuntimeError: no"),
        dataclasses.replace(base, forbidden=["torch.nn.functional.l1_loss"]),
    ]
    digests = {answer_digest(a) for a in [base, *variants]}
    assert None not in digests and len(digests) == len(variants) + 1
    assert answer_digest(dataclasses.replace(base, stdout="printed")) == answer_digest(base)  # not decided on


def test_a_wrong_answer_is_not_given_a_right_answers_verdict(grader):
    p = grader.prepared["l1_loss"]
    k, case = next((k, c) for k, c in enumerate(p.cases) if not c.shape_only)
    right = _student(p.reference[k], case)
    assert grader._decide_case("l1_loss", k, case, right, p.reference[k], p.mistakes[k]).passed
    wrong = dataclasses.replace(right, values={**right.values, "output": right.values["output"] + 1})
    assert not grader._decide_case("l1_loss", k, case, wrong, p.reference[k], p.mistakes[k]).passed


def test_stored_results_are_read_back_as_written(tmp_path):
    written = [SubmissionResult(f"s{k}", STEM, f"{STEM}.ipynb", status="graded", max_score=16.0) for k in range(3)]
    kept = SubmissionResult("unwritten", STEM, None, status="grader-error")
    stored = StoredResults(tmp_path, STEM)
    for r in written:
        write_result(tmp_path, r)
        stored.add(r, written=True)
    stored.add(kept, written=False)
    stored.add(SubmissionResult("lost", STEM, None), written=True)  # its file is not there
    back = list(stored)
    assert len(stored) == 5
    assert [r.to_json() for r in back[:3]] == [json.loads(json.dumps(r.to_json())) for r in written]
    assert back[3] is kept
    assert back[4].student_id == "lost" and back[4].status == "grader-error"


def _class_of_verdicts(grader) -> list[SubmissionResult]:
    """Results as real students get them: the reference, each catalogued mistake of every check
    (combinations included), a missing function (every case raises the same error), a check whose
    visible tests failed, and a mix."""
    results = []

    def result(student: str, answers_of) -> SubmissionResult:
        checks = []
        for name, p in grader.prepared.items():
            c = grader.decide(name, [answers_of(name, k, case, ref, mistakes)
                                     for k, (case, ref, mistakes) in enumerate(zip(p.cases, p.reference,
                                                                                   p.mistakes))])
            checks.append(c)
        return SubmissionResult(student, STEM, f"{STEM}.ipynb", checks, max_score=grader.max_score)

    results.append(result("perfect", lambda n, k, case, ref, ms: _student(ref, case)))
    results.append(result("missing", lambda n, k, case, ref, ms: Answer.missing(n)))
    depth = max(len(p.mistakes[0]) for p in grader.prepared.values())
    for j in range(depth):  # student j makes the j-th mistake of every check
        results.append(result(f"mistake{j}", lambda n, k, case, ref, ms, j=j:
                              _student(ms[j][1], case) if j < len(ms) else _student(ref, case)))
    results.append(result("mixed", lambda n, k, case, ref, ms:
                          Answer.failed("RuntimeError: boom") if k % 3 == 0 else
                          _student(ms[k % len(ms)][1], case) if ms else _student(ref, case)))
    results[-1].checks[0].note = "the visible tests in this check's cell failed: AssertionError"
    return results


def test_a_summary_keeps_what_every_class_wide_output_reads(grader):
    """grades.csv, the scores, the LMS files and the class report are made from summaries
    (results.load_summaries, memory flat in the class size): each check's points, counts, note,
    error, mistakes and hints, the troubles and the report's numbers are those of the full
    result; a student's feedback takes the full cases back (`with_cases_of`)."""
    from autograder.class_report import summarize

    full = _class_of_verdicts(grader)
    assert any(c.error for r in full for c in r.checks) and any(c.mistakes for r in full for c in r.checks)
    slim = [r.summary() for r in full]
    for f, s in zip(full, slim):
        assert s.score == f.score and s.status == f.status and s.troubles() == f.troubles()
        for cf, cs in zip(f.checks, s.checks):
            assert (cs.points, cs.passed, cs.total, cs.note, cs.error, cs.mistakes, cs.hints) == \
                (cf.points, cf.passed, cf.total, cf.note, cf.error, cf.mistakes, cf.hints), (f.student_id, cf.name)
            assert len(cs.cases) <= len(cf.mistakes) + 1
        assert s.with_cases_of(f) == f
    assert summarize(slim) == summarize(full)
    size = sum(len(json.dumps(r.to_json())) for r in slim)
    assert size < sum(len(json.dumps(r.to_json())) for r in full) / 5


def _nudged(ans: Answer, key: str, fn) -> Answer:
    v = ans.values[key].clone()
    fn(v.view(-1))
    return dataclasses.replace(ans, values={**ans.values, key: v})


def _answers_of_every_kind(p, k, case, ref, mistakes) -> list[Answer]:
    """The reference's answer as a student's, each mistake's, and values at and past the
    tolerance's edge, non-finite, of another dtype, shape or device, missing or raised."""
    right = _student(ref, case)
    out = [right] + [_student(a, case) for _, a in mistakes]
    for key, v in right.values.items():
        if type(v) is not torch.Tensor or not v.is_floating_point() or not v.numel():
            continue
        scale = float(v.abs().max()) or 1.0
        for rel in (1e-9, 1e-6, 1e-5, 1e-3):
            out.append(_nudged(right, key, lambda t, rel=rel: t.__setitem__(0, t[0] + rel * scale)))
        for bad in (float("nan"), float("inf"), -float("inf")):
            out.append(_nudged(right, key, lambda t, bad=bad: t.__setitem__(0, bad)))
        out.append(dataclasses.replace(right, values={**right.values, key: v.double() if v.dtype != torch.float64
                                                      else v.float()}))
        out.append(dataclasses.replace(right, values={**right.values, key: v.reshape(1, *v.shape)}))
        out.append(dataclasses.replace(right, devices={**right.devices, key: "meta"}))
        out.append(dataclasses.replace(right, values={k2: x for k2, x in right.values.items() if k2 != key}))
    out.append(dataclasses.replace(right, error="RuntimeError: no"))
    out.append(dataclasses.replace(right, forbidden=["torch.nn.functional.l1_loss"]))
    return out


def test_the_bulk_comparison_passes_exactly_what_each_case_decided_alone_passes(grader):
    """`Grader._accepted` (every passing output of a check compared in one pass) accepts a case
    exactly when `decide_case` passes it, for right, wrong and edge answers; the rest is decided
    case by case, as before."""
    for name, p in grader.prepared.items():
        rows = [_answers_of_every_kind(p, k, case, ref, ms)
                for k, (case, ref, ms) in enumerate(zip(p.cases, p.reference, p.mistakes))]
        for j in range(max(len(r) for r in rows)):
            answers = [r[j % len(r)] for r in rows]
            accepted = grader._accepted(p, answers)
            for k, (case, ref, ms, ans) in enumerate(zip(p.cases, p.reference, p.mistakes, answers)):
                passed = decide_case(case, ans, ref, ms).passed
                if p.bulk.specs[k] is None:
                    assert k not in accepted
                else:
                    assert (k in accepted) == passed, (name, case.label, j)
        assert p.bulk.eligible, name  # the bulk path is taken for every check of the chapter


def test_the_codec_gives_back_every_tensor_without_copying_each_and_refuses_an_unaligned_one():
    import struct

    from autograder.answer import MalformedAnswer, decode, encode_records

    values = {"a": torch.arange(7, dtype=torch.float32), "b": torch.tensor(True), "c": torch.zeros(0, 3),
              "d": torch.arange(5, dtype=torch.int64).reshape(5, 1), "e": torch.tensor([1.5], dtype=torch.float64)}
    back = decode(encode_records("answers", [{"values": values}, {"values": dict(values)}]))["records"]
    for record in back:
        for key, v in values.items():
            got = record["values"][key]
            assert type(got) is torch.Tensor and got.dtype == v.dtype and torch.equal(got, v)
    back[0]["values"]["a"][0] = 99.0  # tensors of one message never overlap
    assert back[1]["values"]["a"][0] == 0 and back[0]["values"]["e"][0] == 1.5

    data = encode_records("answers", [{"values": {"x": torch.ones(2, dtype=torch.float64)}}])
    (size,) = struct.unpack("<Q", data[1:9])
    meta = json.loads(data[9:9 + size])
    meta["index"][0][2] = 4  # an offset that is not a multiple of the element size
    forged = json.dumps(meta).encode()
    with pytest.raises(MalformedAnswer):
        decode(b"R" + struct.pack("<Q", len(forged)) + forged + data[9 + size:] + bytes(16))


def test_a_result_is_written_as_dataclasses_would_give_it(grader):
    """`SubmissionResult.to_json` (made without asdict's deep copy) is what asdict gives, with the
    score, the problems and each check's hints and mistakes; nothing in it shares a list with the result."""
    from autograder.problems import Problem

    for r in _class_of_verdicts(grader):
        r.problems.append(Problem("notebook", "graded losses.ipynb"))
        want = dataclasses.asdict(r)
        want["score"] = r.score
        want["problems"] = [p.to_json() for p in r.problems]
        for c, obj in zip(want["checks"], r.checks):
            c["hints"], c["mistakes"] = obj.hints, obj.mistakes
        got = r.to_json()
        assert got == want
        assert SubmissionResult.from_json(json.loads(json.dumps(got))).to_json() == got
        for c, obj in zip(got["checks"], r.checks):
            for v, verdict in zip(c["cases"], obj.cases):
                for key, value in v.items():
                    if type(value) is list:
                        assert value is not getattr(verdict, key)


@pytest.mark.parametrize("tags", [True, False], ids=["version tags", "without them"])
def test_the_childs_reset_undoes_what_a_full_restore_undoes(monkeypatch, tags):
    """The child's reset (sandbox/child.py `Pristine`) compares again only the namespaces whose
    version tag changed; whatever graded code patched (a torch function, a Tensor method, a builtin,
    this package's own names, a mode left on) is undone as a full restore undoes it, also when the
    code rebinds the names the reset itself uses; without version tags it restores in full."""
    import builtins

    import autograder.sandbox.child as child
    from autograder.torchstate import snapshot

    if not tags:
        monkeypatch.setattr(child, "version_tags_work", lambda: False)
    elif not child.version_tags_work():
        pytest.skip("this Python has no dictionary version tags")
    pristine = child.Pristine(snapshot([child]))
    relu, tensor_add, builtin_id, tag = torch.nn.functional.relu, torch.Tensor.__add__, builtins.id, child._tag
    for _ in range(2):  # twice: the second reset starts from the tags the first one read
        torch.nn.functional.relu = None
        torch.Tensor.__add__ = lambda a, b: 0
        torch.Tensor.added_method = lambda self: 0
        builtins.id = lambda x: 0
        child._tag = lambda d: 0
        child.restore = lambda saved: None
        torch.overrides.TorchFunctionMode().__enter__()
        pristine.reset()
        assert torch.nn.functional.relu is relu and torch.Tensor.__add__ is tensor_add
        assert not hasattr(torch.Tensor, "added_method") and builtins.id is builtin_id
        assert child._tag is tag and torch._C._len_torch_function_stack() == 0
        assert torch.equal(torch.ones(1) + torch.ones(1), torch.full((1,), 2.0))
    pristine.reset()  # nothing changed: nothing to undo
    assert torch.nn.functional.relu is relu


def _anon_huge_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def _collapse_elsewhere() -> tuple[int, int, bool]:
    """In a fresh Python: (bytes collapse_private_memory says it collapsed, KiB in huge pages
    after, whether 16 MiB of random bytes are unchanged)."""
    import subprocess
    import sys

    code = ("import hashlib, os\n"
            "from autograder.sandbox.hugepages import collapse_private_memory\n"
            "buf = bytearray(os.urandom(1 << 16) * 256)\n"  # 16 MiB on the heap
            "before = hashlib.sha256(buf).hexdigest()\n"
            "done = collapse_private_memory()\n"
            "huge = [int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages:')]\n"
            "print(done, huge[0] if huge else 0, hashlib.sha256(buf).hexdigest() == before)\n")
    done, huge, same = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.split()
    return int(done), int(huge), same == "True"


def test_collapsing_into_huge_pages_keeps_every_byte():
    """sandbox/hugepages.py: the memory is the same after, whether or not the kernel could collapse it."""
    done, huge, same = _collapse_elsewhere()
    assert same
    assert (done > 0) == (huge > 0), "collapsed bytes reported but none in huge pages, or the reverse"


def test_a_zygote_in_huge_pages_grades_exactly_as_one_without(grader, tmp_path):
    """A class's zygote (`expected` at least hugepages.WORTH) has its memory collapsed before its
    first fork; its children grade every submission as a zygote that was not collapsed does."""
    from autograder.course import source_notebook
    from autograder.grading import grade_submission, start_zygote
    from autograder.sandbox import hugepages
    from bench.grading import make_submissions
    from bench.stages import _zygote_pid

    subs = make_submissions(tmp_path / "class", 4, source_notebook(STEM))  # the fourth with a known mistake
    by = {}
    for expected in (1, hugepages.WORTH):
        zygote = start_zygote(None, stem=STEM, device="cpu", hide=[str(tmp_path)])
        start_zygote(grader, zygote=zygote, expected=expected)
        try:
            huge = _anon_huge_kib(_zygote_pid(zygote))
            by[expected] = (huge, [grade_submission(grader, s, p.parent, zygote=zygote) for s, p in sorted(subs.items())])
        finally:
            zygote.close()
    if _collapse_elsewhere()[0] > 0:  # a kernel that collapses: the class's zygote is in huge pages
        assert by[hugepages.WORTH][0] > by[1][0]
    plain, collapsed = by[1][1], by[hugepages.WORTH][1]
    for a, b in zip(plain, collapsed):
        assert [(c.grade_id, c.points, c.passed, c.total, [dataclasses.astuple(v) for v in c.cases])
                for c in a.checks] == \
               [(c.grade_id, c.points, c.passed, c.total, [dataclasses.astuple(v) for v in c.cases])
                for c in b.checks]
    assert plain[3].score < plain[0].score == plain[0].max_score


@pytest.mark.parametrize("change", ["into the padding", "negative dim", "float dim", "bool offset", "past the end",
                                    "size not the shape's", "unknown dtype"])
def test_the_codec_refuses_a_forged_index_entry(change):
    """decode views the blob padded to 16 bytes: no entry reaches past the message's own bytes,
    and every field of an entry is checked before any view is made."""
    import struct

    from autograder.answer import MalformedAnswer, decode, encode_records

    data = encode_records("answers", [{"values": {"x": torch.ones(3, dtype=torch.float32)}}])
    (size,) = struct.unpack("<Q", data[1:9])
    meta, blob = json.loads(data[9:9 + size]), data[9 + size:]
    entry = meta["index"][0]  # ["torch.float32", [3], 0, 12]
    if change == "into the padding":
        entry[1], entry[3] = [len(blob) // 4 + 1], (len(blob) // 4 + 1) * 4
    elif change == "negative dim":
        entry[1] = [-3]
    elif change == "float dim":
        entry[1] = [3.0]
    elif change == "bool offset":
        entry[2] = False
    elif change == "past the end":
        entry[2] = len(blob)
    elif change == "size not the shape's":
        entry[3] = 8
    else:
        entry[0] = "torch.float128"
    forged = json.dumps(meta).encode()
    with pytest.raises(MalformedAnswer):
        decode(b"R" + struct.pack("<Q", len(forged)) + forged + blob)
