"""What a trained SE block does: ``npse excitation CHECKPOINT``.  Chapter: docs/13-role-of-excitation.md.

Hu et al. (TPAMI, section 7.2) look at the gates s (N, C) of a trained SE-ResNet per class and per
depth. This package measures what they describe by eye:

* per SE block ``SE_<stage>_<block>`` (``layer3.0.se`` is ``SE_3_1``) and per class k, the mean and
  standard deviation of every channel's gate over the test images of that class;
* class-specificity of a channel: eta^2 = between-class variance of the class means /
  (that + the mean within-class variance), 0 when every class has the same mean gate, 1 when
  the gate is constant within each class; a block is summarised by the median over its channels;
* how many independent directions the class differences of a block take: the participation
  ratio and first singular value's share of its class-mean matrix (classes, C) minus the mean over
  classes. A block of hidden width h computes its C gates from h numbers, so its channels are not
  C independent measurements (at h = 1 they all share one eta^2);
* saturation: the share of gates above 0.95 or below 0.05;
* the spread within a class: the root of the mean within-class variance;
* a histogram of every channel's gates (200 bins on [0, 1]), so that figures need no data.

Beyond the paper, a causal probe (:func:`probe`): for one stage at a time, every gate is replaced by
its class-agnostic mean over 5,000 training images (which removes only the input-dependent part of
the excitation), or by 1 (the block then passes its input unchanged: the residual branch adds F(x)
instead of s * F(x)), and the test accuracy is measured again, with a paired bootstrap interval of
the change.

Modules: ``stats`` (the gates' statistics, the probe, the paper's claims) and ``report`` (gates.npz,
excitation.json/.md, the figures, the stages study, the weights-only export) and ``compare`` (two
analyses side by side, e.g. after 10 and 40 epochs: ``--compare DIR``); the command is
:mod:`npse.commands.excitation`.
"""
from .report import (GATES_FORMAT, STUDY_ARMS, analyse, draw_figures, figure_blocks, plot_gates,
                     read_gates, report_markdown, save_weights_only, sha256_of,
                     study_side_by_side, write_gates)
from .stats import (BINS, HIGH, LOW, GateStats, block_name, collect_gates, depth_trend,
                    effective_rank, find_se_blocks, histogram_rows, host_gate, judge_claims,
                    paired_bootstrap, predict, probe, probe_subset, record_gates, stage_of,
                    trend_verdict)
