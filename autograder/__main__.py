from autograder.cli import main

# Guarded: multiprocessing's fork server imports the main module as __mp_main__.
if __name__ == "__main__":
    raise SystemExit(main())
