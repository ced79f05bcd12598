"""R1 as written, decided by invoicing's pure sale rule: a package not sold online cannot be
bought online, and a sale may only narrow the package's practitioners and locations."""

from __future__ import annotations

import pytest
from packline_contracts.catalogue import Package
from packline_contracts.invoices import PurchaseChannel
from packline_contracts.types import PackageItem, Restriction, Validity
from packline_invoicing.rules import sale_refusal


def package(online: bool = False, practitioners: list[str] | None = None) -> Package:
    return Package(
        package_id="massage-5",
        name="5 x massage",
        items=[PackageItem(fee_id="massage-60", count=5)],
        practitioners=Restriction(ids=practitioners),
        validity=Validity(days=90),
        price_cents=40000,
        currency="EUR",
        online_purchase=online,
    )


def test_a_package_not_sold_online_cannot_be_bought_online() -> None:
    refused = sale_refusal(package(online=False), PurchaseChannel.ONLINE, None, None)
    assert refused == ("channel", "package massage-5 cannot be bought online")
    assert sale_refusal(package(online=True), PurchaseChannel.ONLINE, None, None) is None
    assert sale_refusal(package(online=False), PurchaseChannel.STAFF, None, None) is None


@pytest.mark.parametrize(
    ("chosen", "refused"),
    [
        (None, None),  # nothing chosen: the package's own restriction
        (Restriction(ids=["dr-a"]), None),  # narrowing
        (Restriction(ids=["dr-a", "dr-b"]), None),  # the same
        (Restriction(ids=None), "a sale cannot widen that to any"),
        (Restriction(ids=["dr-c"]), "is not for practitioner(s) dr-c"),
        (Restriction(ids=["dr-a", "dr-c"]), "is not for practitioner(s) dr-c"),
    ],
)
def test_a_sale_may_only_narrow_the_packages_restrictions(
    chosen: Restriction | None, refused: str | None
) -> None:
    answer = sale_refusal(
        package(practitioners=["dr-a", "dr-b"]), PurchaseChannel.STAFF, chosen, None
    )
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and answer[0] == "practitioners" and refused in answer[1]


def test_a_package_for_any_practitioner_may_be_narrowed_to_anyone() -> None:
    chosen = Restriction(ids=["dr-z"])
    assert sale_refusal(package(practitioners=None), PurchaseChannel.STAFF, chosen, None) is None
