"""`make test` hands the longest test modules to its workers first (tests/support/suite_order.py); a renamed
module would silently drop out of that list and one worker would again finish it alone."""

from __future__ import annotations

from support.helpers import REPO
from support.suite_order import LONGEST_MODULES


def test_the_longest_modules_named_for_the_workers_exist():
    missing = [module for module in LONGEST_MODULES if not (REPO / module).is_file()]
    assert not missing, f"tests/support/suite_order.py LONGEST_MODULES names modules that do not exist: {missing}"
    assert len(set(LONGEST_MODULES)) == len(LONGEST_MODULES)


def test_the_listed_modules_are_collected_first_longest_first(request):
    modules = list(dict.fromkeys(item.nodeid.split("::")[0] for item in request.session.items))
    listed = [module for module in modules if module in LONGEST_MODULES]
    assert modules[:len(listed)] == listed == [module for module in LONGEST_MODULES if module in listed], modules
