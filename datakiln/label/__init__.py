"""Weak supervision: label tasks, labelling functions and label models.

`run` is the body of the DVC stage `label@<dataset>` (stages/label.py). A
dataset declares its tasks under `label:` in conf/dataset/<name>.yaml:

    label:
      tasks:
        - name: topic                  # adds topic, topic_confidence, topic_votes
          labels: [sports, politics]   # every label a function may vote
          model: majority              # or dawid_skene, one_coin_dawid_skene
          gold: null                   # a column holding the true label, if any
          functions:
            - {name: sport_words, kind: keywords, column: title, label: sports,
               keywords: [football, World Cup], min_matches: 1}
            - {name: score, kind: regex, column: title, label: sports,
               pattern: "\\d+-\\d+"}
            - {name: site, kind: lookup, column: link, extract: domain,
               table: {espn.com: sports}}
            - {name: folder, kind: metadata, column: folder}
            - {name: mine, kind: python, function: "my_pkg.rules:topic"}

The kinds: `keywords` (whole words or phrases, ignoring case), `regex`
(a Python regular expression, searched), `lookup` (a table of key -> label;
the key is the whole value, the first group of `pattern`, or with `extract:
domain` the host of each URL and its parent domains), `sentiment` (VADER's
compound score: negative, neutral, positive), `metadata` (the value of a
column, optionally mapped by `table`) and `python` (a function taking a
DataFrame batch and returning a label or null per row; modules resolve from
the project root). Each function votes a label or abstains on each record.
"""

from datakiln.label.stage import run

__all__ = ["run"]
