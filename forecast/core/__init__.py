"""The ground floor: what every package of forecast may use, importing nothing of ours above it.

errors (the one-line error), files (atomic writes, md5), allowlist (what data may make us import) and
bounded_yaml (how YAML is read), domains (option types), parsers (one parser family and its messages),
threads (the thread policy), metric_names (the monitored metric), workers (the one worker pool).
"""
