"""nbgrader's configuration for this course (read from the course root)."""
import os

c = get_config()  # noqa: F821 - provided by nbgrader

_root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = _root
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# The gradebook stores hidden tests in plain text: it lives in the course root
# but is ignored by git (.gitignore), never committed.
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_root, "gradebook.db")

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A hidden check imports torch and runs many cases: more than the 30 s default.
c.ExecutePreprocessor.timeout = 120

# Feedback must not show hidden tests: nbgrader's default feedback shows them
# verbatim. ClearHiddenTests removes them from the autograded notebook's
# sources before it is rendered, and ClearHiddenTracebacks (before it) removes
# them from tracebacks: a failing visible test's traceback quotes the lines
# after it, the hidden ones too. The check cells print their own report.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "autograder.gradebook.ClearHiddenTracebacks",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "autograder.gradebook.OfflineMathJax",
]
# nbgrader's feedback page loads MathJax from a CDN: offline, its maths shows as raw $...$. This
# template is nbgrader's page with MathJax inlined (the book's own offline copy, from OfflineMathJax).
# Set for generate_feedback's exporter alone (formgrader's pages keep their own templates).
import autograder  # noqa: E402
import nbgrader  # noqa: E402

c.GenerateFeedback.HTMLExporter.extra_template_basedirs = [
    os.path.join(os.path.dirname(autograder.__file__), "feedback_templates"),
    os.path.join(os.path.dirname(nbgrader.__file__), "server_extensions", "formgrader", "templates"),
]
c.GenerateFeedback.HTMLExporter.template_name = "offline_feedback"
c.GenerateFeedback.HTMLExporter.template_file = "offline.html.j2"
