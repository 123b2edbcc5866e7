"""MkDocs hook: fills the command-line reference (docs/cli.md) with the live `--help` of every `hf-binary-bert`
command, so the page cannot drift from the parser (`hf_binary_bert.cli.build_parser`)."""

import argparse

MARKER = "<!-- cli-help -->"


def _help_sections() -> str:
    from hf_binary_bert.cli import build_parser

    parser = build_parser()
    parser.prog = "hf-binary-bert"
    sections = ["```text\n" + parser.format_help() + "```"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.prog = f"hf-binary-bert {name}"
                sections.append(f"## `{name}`\n\n```text\n{sub.format_help()}```")
    return "\n\n".join(sections)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, _help_sections())
    return markdown
