"""lakefs:// addresses: parsing, globs and the errors for bad ones."""

from __future__ import annotations

import pytest

from datakiln.errors import ConfigError
from datakiln.lakefs.uri import LakeFSURI


def test_address_splits_into_repo_ref_and_path() -> None:
    uri = LakeFSURI.parse("lakefs://raw-data/main/tweets/2015/part.csv")
    assert (uri.repo, uri.ref, uri.path) == ("raw-data", "main", "tweets/2015/part.csv")
    assert str(uri) == "lakefs://raw-data/main/tweets/2015/part.csv"


def test_address_without_path_means_the_whole_ref() -> None:
    uri = LakeFSURI.parse("lakefs://raw-data/main")
    assert uri.path == ""
    assert uri.matches("anything/at/all.csv")


def test_folder_path_selects_everything_below_it() -> None:
    uri = LakeFSURI.parse("lakefs://raw-data/main/tweets/")
    assert uri.matches("tweets/a.csv") and uri.matches("tweets/2015/b.csv")
    assert not uri.matches("news/a.csv")


def test_star_stays_within_one_folder_and_double_star_spans_folders() -> None:
    one = LakeFSURI.parse("lakefs://raw-data/main/tweets/*.zip")
    assert one.is_glob and one.list_prefix == "tweets/"
    assert one.matches("tweets/a.zip")
    assert not one.matches("tweets/2015/a.zip")
    deep = LakeFSURI.parse("lakefs://raw-data/main/tweets/**/*.zip")
    assert deep.matches("tweets/a.zip") and deep.matches("tweets/2015/06/a.zip")


def test_not_a_lakefs_address_names_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.path: 's3://b/k' is not a lakeFS"
    ):
        LakeFSURI.parse("s3://b/k", "sources[0].path")


def test_bad_repository_name_is_explained() -> None:
    with pytest.raises(ConfigError, match="repository 'Raw_Data'.*lower-case"):
        LakeFSURI.parse("lakefs://Raw_Data/main/x")


def test_missing_ref_is_explained() -> None:
    with pytest.raises(ConfigError, match="no valid branch, tag or commit"):
        LakeFSURI.parse("lakefs://raw-data")
