"""/v1/tags answers for any known identifier of a person, not only her OneID (issue: OneID)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from features import repo
from features import store as fs
from features.identity import stitch_workspace
from features.pipeline import compute_features
from portrait.settings import Settings
from serving.tagger import Tagger
from tests.features.test_identity import identities_table
from tests.serving.conftest import SNAPSHOT


def test_tags_by_a_secondary_identifier(served_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "ws"
    shutil.copytree(served_home, home)
    settings = Settings(home=home, identity_probabilistic=False)  # shared strong identifiers only
    rows = [
        {"record_id": f"C{i:07d}", "source": "web", "email": f"shopper{i}@example.org"} for i in range(1, 40)
    ]
    rows.append(
        {"record_id": "app-0001", "source": "app", "email": "Shopper1@Example.org", "phone": "0612345678"}
    )
    pq.write_table(identities_table(rows), settings.raw_dir / "identities.parquet")
    stitch_workspace(settings)
    compute_features(settings.clean_dir, settings.features_dir, [SNAPSHOT])  # keyed by OneID now
    repo.apply(settings)
    fs.materialize(settings, incremental=False)

    tagger = Tagger(settings)
    assert tagger.identity is not None
    by_email, by_phone, by_record, nobody = tagger.tags(
        ["email:shopper1@example.org", "phone:+33 6 12 34 56 78", "C0000001", "email:nobody@example.org"]
    )
    assert by_email.found and by_email.oneid and by_email.oneid.startswith("OID")
    assert by_email.customer_id == "email:shopper1@example.org"  # the id as requested
    assert by_phone.found and by_phone.oneid == by_email.oneid  # the app record's phone: the same person
    assert by_email.churn is not None and by_email.churn.probability == by_phone.churn.probability
    assert not nobody.found and "unknown identifier" in (nobody.error or "")
    # The web shop's own customer id is a record of the same person.
    assert by_record.found and by_record.oneid == by_email.oneid
