"""How a DICOM PN value shows on the worklist: family name first, every part in its place, nothing hidden."""

import pytest

from osteo_batch.worklist import display_name

ESC_CLEAR = "\x1b[2J"
RLO = "\u202e"


@pytest.mark.parametrize("pn, shown", [
    ("Doe^Jane", "Doe, Jane"),
    ("Doe^Jane^Ann", "Doe, Jane Ann"),  # middle name after the given name
    ("Doe^Jane^^Dr.", "Doe, Dr. Jane"),  # the prefix before the given name, not after it
    ("Doe^Jane^^^III", "Doe, Jane, III"),  # the suffix last, set apart
    ("Doe^Jane^Ann^Dr.^Jr.", "Doe, Dr. Jane Ann, Jr."),
    ("Doe^^^^Jr.", "Doe, Jr."),
    ("^Jane", "Jane"),
    ("Doe", "Doe"),
    ("Doe ^ Jane ", "Doe, Jane"),  # padding around a component is not part of it
])
def test_alphabetic_components_are_in_reading_order(pn, shown):
    assert display_name(pn) == shown


@pytest.mark.parametrize("pn", [None, "", "^", "^^^^", "=", "^=^=^"])
def test_an_empty_name_shows_as_nothing(pn):
    assert display_name(pn) == ""


def test_ideographic_and_phonetic_groups_follow_in_brackets_written_together():
    assert display_name("Hong^Gildong=洪^吉洞=홍^길동") == "Hong, Gildong (洪吉洞, 홍길동)"
    assert display_name("Yamada^Hanako=山田^花子") == "Yamada, Hanako (山田花子)"
    assert display_name("Hong^Gildong==홍^길동") == "Hong, Gildong (홍길동)", "an empty ideographic group is skipped"


def test_a_name_without_an_alphabetic_group_shows_its_other_groups():
    assert display_name("=김^희중") == "김희중"
    assert display_name("=山田^花子=やまだ^はなこ") == "山田花子, やまだはなこ"
    assert display_name("김미영") == "김미영", "a single-group name is shown as written"


def test_a_long_component_is_shown_whole_and_warns_nobody(recwarn):
    assert display_name("A" * 80 + "^B") == "A" * 80 + ", B"
    assert not [w for w in recwarn if "PN" in str(w.message)]


def test_control_characters_are_removed_before_the_name_is_read():
    assert display_name("Ev\x00il^Ja\x07ne=" + RLO + "山田^花子") == "Evil, Jane (山田花子)"
    assert display_name(ESC_CLEAR + "Doe^Jane\x1b]0;x\x07") == "[2JDoe, Jane]0;x"
    assert display_name("Doe\n^Jane\t^Ann") == "Doe, Jane Ann", "a newline or tab is folded, then trimmed"
    assert display_name("\x00^\x07") == ""
    shown = display_name("Do\u009be^J" + RLO + "ane=" + ESC_CLEAR + "^x")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == RLO for c in shown)
