"""Grafana for firesale: dashboards generated from code and the provisioning that loads them.

``python -m deploy.grafana.build`` writes ``deploy/grafana/dashboards/*.json``; ``--check`` fails
when the committed JSON differs from what the code generates. ``provisioning/`` holds the
Prometheus datasource (uid ``prometheus``) and the file provider for the dashboards.
"""
