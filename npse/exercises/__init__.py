"""Exercises with checkers: write a layer yourself, and let the test suite's checks judge it.

    python -m npse.exercises list                     # the exercises and their chapters
    python -m npse.exercises start linear my_work/    # copies the stub my_work/linear.py
    python -m npse.exercises check linear my_work/linear.py

A stub holds the functions' signatures and docstrings (shapes included) and raises
``NotImplementedError``. ``check`` runs hypothesis-drawn properties on the file: agreement with
npse's own functions, gradients against central differences (float64, relative error <= 1e-6),
and the layer's particular rules (col2im's adjoint identity, max pooling's tie rule, ...). Each
failure names the property and the tensor and shows a shrunk example. Chapter 2 describes the
design; each layer's chapter ends with its exercise.
"""
from __future__ import annotations


def exercises() -> dict:
    """{name: Exercise} in the order of the chapters (imported on demand: they need hypothesis)."""
    from . import (activations, avgpool2d, batchnorm2d, conv2d, cross_entropy, im2col, linear,
                   maxpool2d, se_block, sgd, shortcut_a)
    return {m.EXERCISE.name: m.EXERCISE
            for m in (linear, activations, cross_entropy, im2col, conv2d, maxpool2d, avgpool2d, batchnorm2d,
                      se_block, shortcut_a, sgd)}
