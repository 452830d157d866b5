"""Incremental two-tower recommendations: the library behind the Airflow DAGs.

Importing this package is cheap on purpose (no pandas, TensorFlow or Great Expectations), so DAG files
may import small helpers from it at parse time. Never imports airflow.
"""

__version__ = "0.1.0"
