"""Many workers on one study: processes on this machine (``local``), loops on a Dask
cluster (``cluster``), or ``caviar worker`` joining by hand (``worker``). A worker is
``caviar.search.tune.work``: it trains populations for the study that ``WorkerSpec`` names;
the study in the storage is what they share (``caviar.search.study.shared``).

Nothing heavy is imported here: ``caviar.search.tune`` imports ``spec``."""
