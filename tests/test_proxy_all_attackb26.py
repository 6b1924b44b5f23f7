"""`--proxies all` beside other names (`all,learning_time(rule=count)`, to get a variant on top) was
refused as "unknown proxy 'all'; valid proxies: ... (or 'all')", which names the word it refuses as
valid. Now the message says that all takes no other names and how to get what was asked."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from proxies import resolve_proxies


@pytest.mark.parametrize("selection", ["all,learning_time(rule=count)", "csl, all", "all(k=1)"])
def test_all_beside_other_names_says_it_stands_alone(selection: str) -> None:
    with pytest.raises(HarnessError) as caught:
        resolve_proxies(selection)
    message = str(caught.value)
    assert message.startswith(f"--proxies {selection}: 'all' selects every proxy and the variants each lists, and "
                              "takes no other names nor parameters; pass all alone")
    assert "unknown proxy" not in message


def test_all_alone_still_selects_every_proxy_and_its_variants() -> None:
    labels = [p.label for p in resolve_proxies(" all ")]
    assert "csl" in labels and "learning_time(rule=count)" in labels and "learning_time" in labels
