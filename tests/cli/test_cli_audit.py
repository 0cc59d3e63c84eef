"""``game-api audit list``: the command line's own actions are by ``cli``."""

from __future__ import annotations

from app.domain.keys import digest
from tests.cli.test_cli import Cli, cli  # noqa: F401


def test_the_command_line_records_its_actions_as_cli(cli: Cli) -> None:  # noqa: F811
    created = cli.json("keys", "create", "--name", "audited", "--scope", "read")
    target = created["prefix"]
    rotated = cli.json("keys", "rotate", target)
    cli.ok("keys", "revoke", rotated["prefix"])

    listing = cli.json("audit", "list", "--limit", "2")
    assert [(e["action"], e["target_prefix"]) for e in listing["entries"]] == [
        ("revoked", rotated["prefix"]),
        ("rotated", target),
    ]
    assert {e["actor_prefix"] for e in listing["entries"]} == {"cli"}
    assert {e["request_id"] for e in listing["entries"]} == {None}
    assert listing["entries"][0]["finality"] is not None
    assert listing["entries"][1]["detail"] == rotated["prefix"]
    assert listing["next_cursor"] is not None

    rest = cli.json("audit", "list", "--cursor", listing["next_cursor"])
    assert [(e["action"], e["target_prefix"]) for e in rest["entries"]] == [("created", target)]
    assert rest["next_cursor"] is None

    text = cli.ok("audit", "list", "--target", target)
    lines = text.splitlines()
    assert lines[0].split() == [
        "ID", "WHEN", "ACTOR", "ACTION", "TARGET", "DETAIL", "REQUEST", "FINALITY",
    ]  # fmt: skip
    assert lines[0].index("ACTOR") == lines[1].index("cli")  # aligned columns
    assert [line.split()[3] for line in lines[1:]] == ["rotated", "created"]
    for secret in (created["key"], digest(created["key"]), rotated["key"]):
        assert secret not in text


def test_a_malformed_cursor_is_one_line_error(cli: Cli) -> None:  # noqa: F811
    result = cli.run("audit", "list", "--cursor", "nonsense")

    assert result.returncode == 1
    assert "cursor is malformed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
