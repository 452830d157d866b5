"""The recsys pages of the Airflow UI: the model registry and the validation reports.

``recsys_plugin.py`` (next to this package) registers them with Airflow: a FastAPI app (``app.py``) mounted
by the API server under ``/recsys``, nav entries that show its pages inside the Airflow UI, and extra links
on the pipeline's tasks (``links.py``). The pages are rendered on the server (``render.py``: HTML, with
the inline SVG plot of ``plot.py``; no scripts, nothing from the internet); their data comes from
``recsys.report`` and the partition store the pipeline writes to. ``security.py`` gives every response its
headers (a strict CSP; the validation reports sandboxed, out of the Airflow UI's origin). Nothing here imports
pandas, TensorFlow or Great Expectations.
"""
