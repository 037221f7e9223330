"""How to call the graded code, and what comes back.

A probe runs the graded object on one case and returns a dict of named
outputs (tensors or plain values). The same probe runs the student's code (in
the sandboxed child), the reference and each known mistake (in the trusted
parent), so all three are measured the same way. Everything a probe returns
becomes an `autograder.answer.Answer` of plain tensors and plain values
(`run_probe`), which crosses the one codec of `autograder/answer.py`.

A probe is any object with `run(impl, case, watch) -> dict`; it must call the
graded code inside `with watch:` (when watch is not None) so forbidden calls
are seen. One module per kind of graded object:

    core.py               what every probe shares: call watching, run_probe
    watchnames.py         every name a forbidden torch function goes by, read from torch
    helpers.py            the course's stand-ins for a graded helper another check calls (one bug costs once)
    replay.py             .item()/.tolist()/.numpy() on the simulated device, replayed from the CPU pass
    fake_cuda.py          a forward pass on a simulated CUDA device (machines without a GPU)
    function.py           a function: output and input gradients (also over model.parameters())
    module.py             an nn.Module class or a builder of one: parameters, forward, .to()
    activation_module.py  an activation module with learnable parameters (PReLU)
    autograd_function.py  a torch.autograd.Function: forward and its hand-written backward
    optimizer.py          an optimizer class over K steps, and a training loop
    gradient.py           a function of a function: a gradient helper, a gradient-descent loop
    model_diagnostic.py   a diagnostic function of a model the probe builds
    training.py           the capstone: standardize, evaluate and a whole training run
    optim_problems.py     the small problems the optimizer probes run on

Chapters import the probe classes from their modules directly.
"""
from autograder.probes.core import NOT_DIFFERENTIABLE, grad_weights, run_probe, to_wire
from autograder.probes.function import FunctionProbe

__all__ = ["NOT_DIFFERENTIABLE", "FunctionProbe", "grad_weights", "run_probe", "to_wire"]
