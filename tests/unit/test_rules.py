"""The rules the batch and the API share (`carousel.rules`) and the interaction weights the pipeline and
the baselines share (`jobs.features.signals`), on hand-made values with hand-computed answers."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from carousel.rules.carts import abandoned_cart
from carousel.rules.consent import Consent, opted_out
from carousel.rules.erasure import erasure_digest
from carousel.rules.segments import context_segment, department
from jobs.features import signals


def test_a_cart_is_abandoned_once_its_newest_item_is_old_enough() -> None:
    """The window counts from the newest item still in the cart; items come back newest first."""
    cart = {"a": 100.0, "b": 300.0, "c": 200.0}
    assert abandoned_cart(cart, set(), now=300.0 + 1799, after_s=1800) == []
    assert abandoned_cart(cart, set(), now=300.0 + 1800, after_s=1800) == ["b", "c", "a"]


def test_bought_items_neither_come_back_nor_keep_the_cart_fresh() -> None:
    """An item bought (and put in the cart again) is left out, and its time does not count."""
    cart = {"a": 100.0, "b": 5_000.0}
    assert abandoned_cart(cart, {"b"}, now=2_000.0, after_s=1800) == ["a"]
    assert abandoned_cart({"b": 100.0}, {"b"}, now=10_000.0, after_s=1800) == []


def test_a_recorded_consent_choice_wins_over_the_lake_both_ways() -> None:
    """Lake opt-outs stand unless the API recorded a yes since; a recorded no adds the shopper."""
    recorded = {
        "back-in": Consent(personalization=True, marketing=None),
        "left": Consent(personalization=False, marketing=True),
        "silent": Consent(personalization=None, marketing=None),
    }
    lake = ["back-in", "silent", "lake-only"]
    assert opted_out(lake, recorded, "personalization") == {"silent", "lake-only", "left"}
    assert opted_out(lake, recorded, "marketing") == {"back-in", "silent", "lake-only"}


def test_erasure_digest_is_the_salted_sha256() -> None:
    """The digest Spark computes with sha2(concat(salt, user_id), 256) is this one; another salt gives
    another digest, so digests reverse only with the secret salt."""
    assert (
        erasure_digest("u1", "pepper-pepper-pepper") == hashlib.sha256(b"pepper-pepper-pepperu1").hexdigest()
    )
    assert erasure_digest("u1", "another-salt-entirely") != erasure_digest("u1", "pepper-pepper-pepper")


def test_segment_names_and_departments_are_trimmed_lower_case() -> None:
    """The API's context segment and a category's department use the batch's spelling."""
    assert context_segment("country", " Germany ") == "country:germany"
    assert department(" Home / Lighting") == "home"


def test_als_weight_is_log1p_of_weighted_session_counts() -> None:
    """A purchase session counts 1, a cart 0.5, a view 0.1, log-damped."""
    got = signals.als_weight(
        np.array([2.0, 0.0]), np.array([1.0, 0.0]), np.array([10.0, 3.0]), log1p=np.log1p
    )
    np.testing.assert_allclose(got, [math.log1p(2 + 0.5 + 1.0), math.log1p(0.3)])


def test_basket_weight_damps_size_and_decays_with_age() -> None:
    """1 / log2(1 + size), halved every half-life; no decay without one."""
    size, age = np.array([1.0, 3.0]), np.array([0.0, 60.0])
    np.testing.assert_allclose(signals.basket_weight(size, age, None, log2=np.log2), [1.0, 0.5])
    np.testing.assert_allclose(signals.basket_weight(size, age, 30.0, log2=np.log2), [1.0, 0.125])


@pytest.mark.parametrize("half_life", [None, 14.0])
def test_interest_weight_is_the_type_weight_decayed(half_life: float | None) -> None:
    """An interaction one half-life old counts half its type's weight."""
    weights = signals.interest_type_weights(cart_weight=0.5, view_weight=0.1)
    assert weights == {"purchase": 1.0, "add_to_cart": 0.5, "view": 0.1}
    got = signals.interest_weight(np.array([1.0, 0.5]), np.array([14.0, 0.0]), half_life)
    np.testing.assert_allclose(got, [0.5 if half_life else 1.0, 0.5])


def test_a_shopper_token_binds_one_shopper_until_it_expires() -> None:
    """Round trip; a changed shopper, expiry or signature, a wrong secret, an expired token, a life
    beyond the cap and malformed text all verify to nobody."""
    from carousel.rules.identity import MAX_TTL_S, shopper_token, verified_shopper

    token = shopper_token("u-42@shop.example", "s3cret-s3cret-s3cret", expires_at=1_000_600)
    assert verified_shopper(token, "s3cret-s3cret-s3cret", now=1_000_000) == "u-42@shop.example"
    version, user, expiry, signature = token.split(".")
    other = shopper_token("u-43", "s3cret-s3cret-s3cret", expires_at=1_000_600).split(".")[1]
    for forged in (
        f"{version}.{other}.{expiry}.{signature}",
        f"{version}.{user}.1000700.{signature}",
        f"{version}.{user}.{expiry}.{signature[:-2]}AA",
        "v1.only.three",
        "",
    ):
        assert verified_shopper(forged, "s3cret-s3cret-s3cret", now=1_000_000) is None, forged
    assert verified_shopper(token, "another-secret-entirely", now=1_000_000) is None
    assert verified_shopper(token, "s3cret-s3cret-s3cret", now=1_000_600) is None
    eternal = shopper_token("u", "s3cret-s3cret-s3cret", expires_at=1_000_000 + MAX_TTL_S + 60)
    assert verified_shopper(eternal, "s3cret-s3cret-s3cret", now=1_000_000) is None
