"""Reporting on proxy quality: rank correlations with ground truth and rank aggregation.

A zero-cost proxy is only as good as the ranking it induces, so everything here works on ranks
within a population of architectures: Spearman ρ and Kendall τ against benchmark accuracies
(``scipy.stats``, a tested reference rather than a hand-rolled one) and the AZ-NAS log-rank
ensemble. The benchmarks under ``benchmarks/`` are thin command lines over these functions and
over the benchmark machinery, one module per job, imported from its module:

- :mod:`das.report.provenance`: the machine, code version and time a result records;
- :mod:`das.report.inputs`: the checked input files, proxy list, probe batches and teacher;
- :mod:`das.report.scoring`: scoring architectures with each proxy's failures counted;
- :mod:`das.report.scores_file`: the resumable per-architecture scores CSV;
- :mod:`das.report.output`: standard JSON written atomically and plain text tables.
"""

from das.report.ranking import average_ranks, ensemble_name, log_rank_ensemble, rank_correlation

__all__ = ["average_ranks", "ensemble_name", "log_rank_ensemble", "rank_correlation"]
