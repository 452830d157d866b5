"""The Airflow glue of the recsys DAGs, in the providers' shape (imported by the DAG files and the plugin).

- ``runtime``: what a running task needs: :func:`~runtime.settings` (the one ``Settings`` of a task, with
  the NameNode of the Airflow connection on HDFS) and :func:`~runtime.partition_day` (the one rule for a
  run's partition date).
- ``notifiers``: ``RecsysFailureNotifier``, the failure callback of every recsys task.
- ``sensors``: ``LateAwareWebHdfsSensor`` and the local store's look for the ``_SUCCESS`` marker, both
  reporting a late partition.
- ``operators``: ``TrainerDockerOperator`` and ``TrainerPodOperator``, the fine-tune in a container.
- ``pool_guard``: the scheduler listener (registered by ``recsys_plugin.py``) that creates the registry pool
  when a recsys run starts without it.
- ``dag_support``: what the DAG files share: ``default_args``, the Jinja macros, the domain-error wrapper
  of task bodies and the step inputs (store, settings, day, run id) of a running task.

Airflow puts the plugins folder on ``sys.path``, so DAG files import ``recsys_airflow.*`` by name. The
package is listed in ``plugins/.airflowignore``: it is a library, not a folder of plugin files.
"""
