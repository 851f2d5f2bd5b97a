"""The study: what a tune stores, where, and how a run resumes it.

- ``keys``: the keys a study stores (study and trial user attributes), named once for the
  writers (tuner, samplers) and the readers (report, leaderboard);
- ``archive``: finished trials into the database through a journal and a writer process
  (``python -m caviar.search.study.archive``);
- ``store``: opening the study, marking interrupted trials, recording the run, the in-memory
  working copy, the leaderboard, and the model a run left behind (resume).

Nothing is imported here, so that the writer process loads Optuna alone.
"""
