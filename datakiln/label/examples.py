"""A worked example of the `python` kind of labelling function.

conf/dataset/news_articles.yaml declares it as
`function: datakiln.label.examples:link_section`. A python function takes a
DataFrame batch and returns one label per row, or None where it abstains; it
is for rules that YAML cannot say, here: take a link apart and read its path.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pandas as pd

# Section names that outlets put in their article links, by topic.
SECTIONS = {
    "politics": "politics",
    "election": "politics",
    "economy": "business",
    "business": "business",
    "markets": "business",
    "sport": "sports",
    "sports": "sports",
    "football": "sports",
    "health": "health",
    "science": "science_tech",
    "technology": "science_tech",
    "entertainment": "entertainment",
    "arts": "entertainment",
}


def link_section(batch: pd.DataFrame) -> pd.Series:
    """The topic named by a section of the article's link, if any.

    `www.bbc.co.uk/news/uk-politics-39` and `tass.com/politics/929417` both
    say politics; the first section word found in the path wins.
    """
    return batch["article_source_link"].map(_section_topic)


def _section_topic(link: object) -> str | None:
    if not isinstance(link, str):
        return None
    path = urlsplit(link).path.casefold()
    for word in re.split(r"[/\-_.]+", path):
        if word in SECTIONS:
            return SECTIONS[word]
    return None
