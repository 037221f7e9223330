"""One module per chapter, named by its stem, each with a list CHECKS."""
