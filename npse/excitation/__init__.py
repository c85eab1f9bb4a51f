"""What a trained SE block does: ``npse excitation CHECKPOINT``.  Chapter: docs/13-role-of-excitation.md.

Hu et al. (TPAMI, section 7.2) look at the gates s (N, C) of a trained SE-ResNet per class and per
depth. This package measures what they describe by eye:

* per SE block ``SE_<stage>_<block>`` (``layer3.0.se`` is ``SE_3_1``) and per class k, the mean and
  standard deviation of every channel's gate over the test images of that class;
* class-specificity of a channel: eta^2 = between-class variance of the class means /
  (that + the mean within-class variance), 0 when every class has the same mean gate, 1 when
  the gate is constant within each class; a block is summarised by the median over its channels;
* saturation: the share of gates above 0.95 or below 0.05;
* the spread within a class: the root of the mean within-class variance.

Beyond the paper, a causal probe (:func:`probe`): for one stage at a time, every gate is replaced by
its class-agnostic mean (which removes only the input-dependent part of the excitation), or by 1
(which also removes the learned average scale), and the test accuracy is measured again.

Modules: ``stats`` (the gates' statistics, the probe, the paper's claims) and ``report`` (gates.npz,
excitation.json/.md, the figures, the stages study, the weights-only export); the command is
:mod:`npse.commands.excitation`.
"""
from .report import (GATES_FORMAT, STUDY_ARMS, analyse, figure_blocks, plot_gates, read_gates,
                     report_markdown, save_weights_only, sha256_of, study_side_by_side, write_gates)
from .stats import (HIGH, LOW, GateStats, block_name, collect_gates, find_se_blocks, host_gate,
                    judge_claims, probe, stage_of)
