"""bridge/text.py: mentions and links neutralized, long text split."""

from __future__ import annotations

import re

import pytest

from bridge.sender import format_message
from bridge.text import (
    ZERO_WIDTH_SPACE,
    iso_time,
    neutralize,
    neutralize_links,
    neutralize_mentions,
    split_text,
)

SYSTEM_MENTIONS = {"@channel", "@here", "@all"}


def _fields(text: str) -> list[str]:
    """strings.FieldsFunc as Mattermost's mention parser calls it."""
    keep = set(":.-_@")
    words, word = [], ""
    for char in text:
        if char in keep or char.isalpha() or char.isnumeric():
            word += char
        elif word:
            words.append(word)
            word = ""
    if word:
        words.append(word)
    return words


def mattermost_mentions(text: str, usernames: tuple[str, ...] = ("john",)) -> set[str]:
    """What Mattermost's StandardMentionParser.ProcessText would notify.

    A port of server/channels/app/mention_parser_standard.go (keywords:
    the system mentions and ``@<username>``), enough to check that visitor
    text reaches the channel without pinging anyone.
    """
    keywords = SYSTEM_MENTIONS | {f"@{name}" for name in usernames}
    found: set[str] = set()

    def check(word: str) -> bool:
        if word.lower() in keywords:
            found.add(word.lower())
            return True
        return False

    for word in _fields(text):
        if word[0] == ":" and word[-1] == ":":
            continue  # an emoji
        word = word.lstrip(":.-_")
        if check(word):
            continue
        trimmed, hit = word, False
        while trimmed and trimmed[-1] in ".-:_":
            trimmed = trimmed[:-1]
            if check(trimmed):
                hit = True
                break
        if hit:
            continue
        if word.startswith("@") and word not in SYSTEM_MENTIONS:
            continue  # only an "other potential mention": nobody is notified
        if any(char in word for char in ".-:"):
            for part in re.split(r"[.:\-]", word):
                if part:
                    check(part)
    return found


# -- the port itself agrees with the server on the plain cases -------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("@channel", {"@channel"}),
        ("hello @here!", {"@here"}),
        ("cc @john.", {"@john"}),
        ("Thanks.@all", {"@all"}),
        ("mail ann@example.com", set()),
        ("@" + ZERO_WIDTH_SPACE + "channel", set()),
    ],
)
def test_mention_model_matches_the_server_parser(text, expected):
    assert mattermost_mentions(text) == expected


# -- neutralize_mentions -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "@channel help!",
        "hi @here",
        "(@all)",
        "@Channel in capitals",
        "ping @john please",
        "is @john.",
        "line one\n@here on line two",
        "x-@channel",
        ":@here",
        "Thanks.@channel",  # Mattermost splits words on '.', so this pings
        "_@here",  # Mattermost strips leading '_', so this pings
    ],
)
def test_visitor_text_pings_nobody_after_neutralizing(text):
    assert mattermost_mentions(text), "the raw text should ping someone"
    assert mattermost_mentions(neutralize_mentions(text)) == set()


def test_neutralized_mention_reads_the_same_apart_from_a_zero_width_space():
    result = neutralize_mentions("hey @channel and @here and @all and @john")
    assert "@channel" not in result
    assert "@here" not in result
    assert "@all" not in result
    assert "@john" not in result
    assert result.replace(ZERO_WIDTH_SPACE, "") == "hey @channel and @here and @all and @john"


@pytest.mark.parametrize(
    "text",
    [
        "write to ann.lee@example.com",
        "a@b.c",
        "first_last@example.org, second@example.org",
        "no mentions at all",
        "",
    ],
)
def test_email_addresses_and_plain_text_are_untouched(text):
    assert neutralize_mentions(text) == text


# -- neutralize_links: what Mattermost's Markdown would turn into images and links ------

# The link grammar of Mattermost's marked (mattermost/marked lib/marked.js, used
# by webapp/channels/src/utils/markdown): inline links and images, reference
# links (whitespace allowed before the second "["), shortcut references, and
# reference definitions. Searched at every position, which finds at least
# what the real parser does (the server's CommonMark parser is stricter still).
_INSIDE = r"(?:\[[^\]]*\]|[^\[\]]|\](?=[^\[]*\]))*"
_HREF = r"""\s*<?([\s\S]*?)>?(?:\s+['"]([\s\S]*?)['"])?\s*"""
INLINE = re.compile(rf"(!?)\[({_INSIDE})\]\({_HREF}\)")
REFERENCE = re.compile(rf"(!?)\[({_INSIDE})\]\s*\[([^\]]*)\]")
SHORTCUT = re.compile(r"(!?)\[((?:\[[^\]]*\]|[^\[\]])*)\]")
DEFINITION = re.compile(r"^ *\[([^\]]+)\]: *<?([^\s>]+)>?", re.MULTILINE)


def rendered_links(text: str) -> list[tuple[str, str, str]]:
    """(kind, text, destination) of every image or link the Markdown would render."""
    definitions = {label.lower(): href for label, href in DEFINITION.findall(text)}
    found = [("definition", label, href) for label, href in DEFINITION.findall(text)]
    for start in range(len(text)):
        if text[start] not in "![":
            continue
        if match := INLINE.match(text, start):
            found.append(("image" if match[1] else "link", match[2], match[3]))
        elif (match := REFERENCE.match(text, start)) and (match[3] or match[2]).lower() in (
            definitions
        ):
            href = definitions[(match[3] or match[2]).lower()]
            found.append(("image" if match[1] else "link", match[2], href))
        elif (match := SHORTCUT.match(text, start)) and match[2].lower() in definitions:
            found.append(("image" if match[1] else "link", match[2], definitions[match[2].lower()]))
    return found


ATTACKS = [
    "![x](http://tracker.example/pixel.png)",
    '![x](http://tracker.example/pixel.png "title")',
    "![x](<http://tracker.example/pixel.png>)",
    "![](http://tracker.example/p.png =1x1)",
    "look ![x][1] here\n\n[1]: http://tracker.example/pixel.png",
    "![x] [1]\n\n[1]: http://tracker.example/pixel.png",  # marked allows the space
    "![x]\n[1]\n\n[1]: http://tracker.example/pixel.png",
    "![pixel]\n\n[pixel]: http://tracker.example/pixel.png",
    "[https://bank.example](http://evil.example/login)",
    "[https://bank.example][b]\n\n[b]: http://evil.example",
    "[https://bank.example]\n\n[https://bank.example]: http://evil.example",
    "[a [nested] label](http://evil.example)",
    "[a]b](http://evil.example)",
    "  [ref]: http://evil.example\n[ref]",
    "[![x](http://tracker.example/p.png)](http://evil.example)",
]


@pytest.mark.parametrize("text", ATTACKS)
def test_visitor_text_renders_no_image_and_no_link_after_neutralizing(text):
    assert rendered_links(text), "the model should see the attack in the raw text"
    assert rendered_links(neutralize_links(text)) == []


@pytest.mark.parametrize("text", ATTACKS)
def test_neutralized_links_read_as_typed_apart_from_zero_width_spaces(text):
    assert neutralize_links(text).replace(ZERO_WIDTH_SPACE, "") == text


def test_brackets_that_make_no_link_are_kept_and_bare_urls_stay_whole():
    text = "my order [#1234] at https://shop.example/orders?id=7 (see above)"
    result = neutralize_links(text)
    assert "https://shop.example/orders?id=7" in result  # still autolinked as itself
    assert result.replace(ZERO_WIDTH_SPACE, "") == text


def test_the_posted_message_neutralizes_the_visitors_name_and_text():
    message = {
        "direction": "visitor",
        "author": "[Support](http://evil.example) @channel",
        "text": "hi ![x](http://tracker.example/pixel.png) @here",
    }
    for is_root in (True, False):
        post = format_message(message, is_root=is_root)
        assert rendered_links(post) == []
        assert mattermost_mentions(post) == set()
        assert (
            post.replace(ZERO_WIDTH_SPACE, "").count("![x](http://tracker.example/pixel.png)") == 1
        )


def test_notifications_from_the_host_keep_their_markdown():
    message = {"direction": "notification", "author": "", "text": "[Booking 7](https://host/7)"}
    assert format_message(message, is_root=True) == "[Booking 7](https://host/7)"


def test_neutralize_does_mentions_and_links():
    assert (
        neutralize("@all [a](b)") == "@" + ZERO_WIDTH_SPACE + "all [a]" + ZERO_WIDTH_SPACE + "(b)"
    )


# -- split_text ----------------------------------------------------------------


def test_short_text_is_one_part():
    assert split_text("hello", 10) == ["hello"]
    assert split_text("", 10) == [""]


def test_text_exactly_at_the_limit_is_not_split():
    assert split_text("x" * 10, 10) == ["x" * 10]


@pytest.mark.parametrize("limit", [2, 7, 50, 16383])
def test_split_keeps_every_character_in_order_within_the_limit(limit):
    text = "".join(f"word{i} " + ("\n" if i % 7 == 0 else "") for i in range(3000))
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(len(part) <= limit for part in parts)
    assert all(parts)


def test_split_prefers_line_breaks_over_spaces():
    text = "first line is here\nsecond line goes on and on"
    parts = split_text(text, 25)
    assert parts[0] == "first line is here\n"
    assert "".join(parts) == text


def test_split_falls_back_to_a_space():
    text = "aaaa bbbb cccc dddd eeee"
    parts = split_text(text, 12)
    assert parts[0] == "aaaa bbbb "
    assert all(len(part) <= 12 for part in parts)
    assert "".join(parts) == text


def test_split_cuts_hard_when_there_is_no_break():
    text = "x" * 25
    assert split_text(text, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_a_break_early_in_the_window_does_not_make_tiny_parts():
    text = "a\n" + "b" * 30
    parts = split_text(text, 10)
    assert parts[0] == "a\n" + "b" * 8
    assert "".join(parts) == text


def test_split_rejects_a_limit_below_two():
    with pytest.raises(ValueError):
        split_text("abc", 1)


def test_iso_time_is_utc_with_milliseconds():
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1.5) == "1970-01-01T00:00:01.500Z"
    assert iso_time(None) is None


# -- where exactly a part ends (found by make mutate) ----------------------------------


@pytest.mark.parametrize(
    "text, limit, parts",
    [
        pytest.param(
            "aa\nbbb\ncc" + "d" * 10, 10, ["aa\nbbb\n", "cc" + "d" * 8, "dd"], id="last break"
        ),
        pytest.param("aaaaa\n" + "b" * 10, 10, ["aaaaa\n", "b" * 10], id="break at half"),
        pytest.param(
            "aaaaa\n" + "b" * 11, 11, ["aaaaa\n", "b" * 11], id="break at half, odd limit"
        ),
        pytest.param("aaaa\n" + "b" * 10, 10, ["aaaa\nbbbbb", "bbbbb"], id="break before half"),
        pytest.param("aaaa\nbb bbbbbbb", 10, ["aaaa\nbb ", "bbbbbbb"], id="early break, late space"),
        pytest.param("aaaaa " + "b" * 10, 10, ["aaaaa ", "b" * 10], id="space at half"),
        pytest.param("aaaaa " + "b" * 11, 11, ["aaaaa ", "b" * 11], id="space at half, odd limit"),
        pytest.param("aaaa " + "b" * 10, 10, ["aaaa bbbbb", "bbbbb"], id="space before half"),
        pytest.param("a" * 10 + "@channel", 10, ["a" * 9, "a@channel"], id="hard cut before @"),
        pytest.param(
            "xy@channel", 2, ["x", "y@", "ch", "an", "ne", "l"], id="@ at the smallest limit"
        ),
    ],
)
def test_split_points(text, limit, parts):
    assert split_text(text, limit) == parts


@pytest.mark.parametrize("text", ["x" + "@" * 12, "@" * 25, "a@" * 20])
def test_runs_of_at_signs_still_split_into_short_non_empty_parts(text):
    parts = split_text(text, 10)
    assert "".join(parts) == text
    assert all(0 < len(part) <= 10 for part in parts)


def test_the_limit_error_says_what_is_allowed():
    with pytest.raises(ValueError, match="^limit must be at least 2$"):
        split_text("abc", 1)
