"""Code that makes known mistakes on purpose, so that the grader can recognise them.

Lives in the grader only: a known mistake's answer is computed by the trusted
process (autograder/grading.py) and matched against a student's; the
sandbox's zygote and children never import this package.

    optimizers.py   every torch.optim optimizer the course grades, with switches that turn on one bug each
"""
