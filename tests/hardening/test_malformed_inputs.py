"""Every malformed input gets a clear, named error from its parser -- never a crash, never a pass."""

from __future__ import annotations

import pytest
from malformed_corpus import announcement_corpus, episode_corpus, manifest_bytes_corpus, valid_episode
from sample_manifest import sample_manifest_json

from lwd_protocol.announce import AnnouncementError, EpisodeAnnouncement
from lwd_protocol.episode_io import EpisodeFormatError, read_episode
from lwd_protocol.manifest import ManifestError, PolicyManifest


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    return episode_corpus(tmp_path_factory.mktemp("corpus"))


def test_corpus_seed_is_valid(tmp_path):
    assert read_episode(valid_episode(tmp_path)).num_steps == 8


def test_every_bad_episode_is_refused_with_its_reason(episodes):
    failures = []
    for case in episodes:
        try:
            read_episode(case.payload)
        except EpisodeFormatError as exc:
            if case.needle.lower() not in str(exc).lower():
                failures.append(f"{case.name}: error {exc!s:.120} lacks {case.needle!r}")
        except Exception as exc:
            failures.append(f"{case.name}: raised {type(exc).__name__}: {exc!s:.120}")
        else:
            failures.append(f"{case.name}: was accepted")
    assert not failures, "\n".join(failures)
    assert len(episodes) >= 12


def test_every_bad_announcement_is_refused(tmp_path):
    for case in announcement_corpus():
        with pytest.raises(AnnouncementError) as info:
            EpisodeAnnouncement.from_json(case.payload)
        assert case.needle.lower() in str(info.value).lower(), case.name


def test_every_bad_manifest_is_refused_by_name():
    valid = sample_manifest_json()
    assert PolicyManifest.from_json(valid).version == 3
    for case in manifest_bytes_corpus(valid):
        with pytest.raises(ManifestError) as info:
            PolicyManifest.from_json(case.payload)
        assert case.needle.lower() in str(info.value).lower(), f"{case.name}: {info.value}"
