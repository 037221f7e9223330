# Run at start-up by every kernel that executes the book's chapters: the Makefile's book target
# sets PYTHONSTARTUP to this file, and IPython kernels run it before the first cell. It binds
# no name, so a chapter cannot come to rely on it.
#
# myst_nb.glue imports nbformat, nbformat imports jsonschema, and jsonschema's format checkers
# import rfc3987_syntax when it is installed (jupyter_events requires it): that module compiles
# about 40 Lark grammars at import, some 3 s of CPU in every chapter's kernel, for the "iri"
# formats that no notebook schema uses. Marking it as absent makes jsonschema leave those two
# formats unchecked, as it does wherever rfc3987_syntax is not installed.
__import__("sys").modules.setdefault("rfc3987_syntax", None)
