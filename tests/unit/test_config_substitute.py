"""substitute.render and friends: the $(circus.x) / ((circus.x)) / ${socket:x} grammar, property-tested."""

import string

from hypothesis import given
from hypothesis import strategies as st

from circus_linux.config.substitute import (
    expand_vars,
    referenced_sockets,
    render,
    watcher_context,
)


def test_both_forms_and_socket_shorthand():
    ctx = {"wid": "3", "env.HOME": "/root", "sockets.web": "7"}
    assert render("w$(circus.wid) ((circus.wid))", ctx) == "w3 3"
    assert render("$(circus.env.HOME)", ctx) == "/root"
    assert render("--fd $(circus.sockets.web) ${socket:web}", ctx) == "--fd 7 7"


def test_keys_are_case_insensitive():
    assert render("$(CIRCUS.WID) $(circus.Env.home)", {"wid": "1", "env.HOME": "/h"}) == "1 /h"


def test_unknown_keys_stay_verbatim():
    text = "$(circus.nope) ((circus.x.y)) ${socket:none} $(other.wid) $(circus.) ${HOME}"
    assert render(text, {"wid": "1"}) == text


def test_watcher_options_and_context_helper():
    ctx = watcher_context({"numprocesses": "4", "name": "web"}, wid=2, env={"A": "b"}, socket_fds={"s": 9})
    assert render("$(circus.name)-$(circus.wid)/$(circus.numprocesses) $(circus.env.A) $(circus.sockets.s)",
                  ctx) == "web-2/4 b 9"


def test_rendering_in_stages():
    first = render("$(circus.env.X) $(circus.wid)", {"env.X": "x"})
    assert first == "x $(circus.wid)"
    assert render(first, {"wid": "5"}) == "x 5"


def test_referenced_sockets():
    text = "a $(circus.sockets.One) ((circus.sockets.two)) ${socket:three} $(circus.wid)"
    assert referenced_sockets(text) == ("one", "two", "three")


def test_expand_vars():
    assert expand_vars("$A ${B} $C $(x) ${socket:y} $", {"A": "1"}, {"B": "2", "A": "no"}) == (
        "1 2 $C $(x) ${socket:y} $")


marker_free = st.text(alphabet=st.characters(blacklist_characters="$("), max_size=200)


@given(marker_free, st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5))
def test_text_without_markers_round_trips(text, ctx):
    assert render(text, ctx) == text


@given(st.text(max_size=300), st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=5))
def test_render_never_crashes(text, ctx):
    assert isinstance(render(text, ctx), str)


markerish = st.lists(
    st.sampled_from(["$(", "((", "))", ")", "${", "}", "circus.", "socket:", "wid", "env.", "sockets.", ".",
                     "a", "B", " ", "$", "\n"]),
    max_size=30,
).map("".join)


@given(markerish)
def test_empty_context_is_identity(text):
    assert render(text, {}) == text


@given(st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=10),
       st.text(max_size=20))
def test_any_known_key_is_replaced(key, value):
    assert render(f"<$(circus.{key})|((circus.{key}))>", {key: value}) == f"<{value}|{value}>"
