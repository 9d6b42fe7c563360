//! The user guides' command blocks (`docs/guide/*.md`), so that a guide cannot drift from the
//! tool. A fenced block's info string says what is done with it:
//!
//! - ` ```sh ` (or `console`): shown; every `imgmode` command in it must parse (the CLI's test
//!   `every_imgmode_command_in_the_guides_parses`);
//! - ` ```sh test `: run on the host by `cli/tests/guides.rs`, in order, in one scratch
//!   directory per guide, with the `imgmode` under test first in `PATH`;
//! - ` ```sh vm=SCENARIO `: run in the guest by that VM scenario (the harness asks for them with
//!   `imgmode internal guide-blocks`);
//! - a ` ```text ` block right after a run block is what it prints: every non-empty line must
//!   be in the output, where `...` stands for any text.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One fenced block.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    /// The guide's file name (`recert.md`).
    pub guide: String,
    /// The line of the opening fence (1-based).
    pub line: usize,
    /// The info string (`sh test`, `sh vm=boot`, `text`).
    pub info: String,
    pub text: String,
    /// For a run block: the `text` block right after it.
    pub expect: Option<String>,
}

impl Block {
    /// Where it is, for messages: `docs/guide/recert.md:42`.
    pub fn place(&self) -> String {
        format!("docs/guide/{}:{}", self.guide, self.line)
    }

    /// A shell block (shown or run).
    pub fn is_shell(&self) -> bool {
        matches!(
            self.info.split_whitespace().next(),
            Some("sh" | "console" | "bash")
        )
    }

    /// `test`, `vm=SCENARIO`, or `None` for a block that is only shown.
    pub fn run_tag(&self) -> Option<&str> {
        if !self.is_shell() {
            return None;
        }
        self.info.split_whitespace().nth(1)
    }
}

/// The guides' directory in this source tree.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guide")
}

/// Every fenced block of one guide.
pub fn parse(guide: &str, text: &str) -> Result<Vec<Block>> {
    let mut out: Vec<Block> = vec![];
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    // prose since the last block closed: a `text` block after prose is not output
    let mut prose = true;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => {
                let info = line.trim_start().trim_start_matches('`').trim().to_string();
                open = Some((i + 1, info, vec![]));
            }
            (Some(_), true) => {
                let (line, info, body) = open.take().expect("an open block");
                let follows_run = !prose
                    && out
                        .last()
                        .is_some_and(|b| b.run_tag().is_some() && b.expect.is_none());
                prose = false;
                let mut text = body.join("\n");
                text.push('\n');
                if info == "text" && follows_run {
                    out.last_mut().expect("a block").expect = Some(text.clone());
                }
                out.push(Block {
                    guide: guide.to_string(),
                    line,
                    info,
                    text,
                    expect: None,
                });
            }
            (Some((_, _, body)), false) => body.push(line),
            (None, false) => prose |= !line.trim().is_empty(),
        }
    }
    if let Some((line, _, _)) = open {
        bail!("docs/guide/{guide}:{line}: a code block that is never closed");
    }
    for b in &out {
        if let Some(tag) = b.run_tag() {
            if tag != "test" && !tag.starts_with("vm=") {
                bail!(
                    "{}: unknown run tag {tag:?} (test, or vm=SCENARIO)",
                    b.place()
                );
            }
        }
    }
    Ok(out)
}

/// Every block of every guide, guide by guide (file names in order).
pub fn all(dir: &Path) -> Result<Vec<Block>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    names.sort();
    let mut out = vec![];
    for p in names {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(parse(&name, &std::fs::read_to_string(&p)?)?);
    }
    Ok(out)
}

/// Whether `output` says what `expect` shows: each non-empty line of `expect`, its `...`
/// parts in order, within one line of the output. Returns the first line that is not there.
pub fn missing_line(expect: &str, output: &str) -> Option<String> {
    expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find(|want| {
            !output.lines().any(|got| {
                let mut rest = got;
                want.split("...").all(|part| match rest.find(part.trim()) {
                    Some(i) => {
                        rest = &rest[i + part.trim().len()..];
                        true
                    }
                    None => false,
                })
            })
        })
        .map(str::to_string)
}

/// The commands of a shell block: continuation lines joined, comments and blank lines left out.
pub fn commands(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if cur.is_empty() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        if let Some(head) = l.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(l);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The blocks of every guide that `scenario` runs in its guest (`sh vm=SCENARIO`).
pub fn for_scenario(dir: &Path, scenario: &str) -> Result<Vec<Block>> {
    let tag = format!("vm={scenario}");
    Ok(all(dir)?
        .into_iter()
        .filter(|b| b.run_tag() == Some(tag.as_str()))
        .collect())
}

/// A guest script running `blocks` one after the other, each in a subshell with `set -eu`,
/// its output between `GUIDE-BEGIN i` and `GUIDE-END i rc=N`; a failed block does not stop
/// the others.
pub fn guest_script(blocks: &[Block]) -> String {
    let mut s = String::new();
    for (i, b) in blocks.iter().enumerate() {
        s.push_str(&format!(
            "echo 'GUIDE-BEGIN {i}'\nrc=0\n( set -eu\n{}) > /run/imgmode-guide-{i}.out 2>&1 || rc=$?\ncat /run/imgmode-guide-{i}.out\necho \"GUIDE-END {i} rc=$rc\"\n",
            b.text
        ));
    }
    s
}

/// Check the guest's report of [`guest_script`]: every block ran, exited 0 and printed what
/// its `text` block shows. Returns how many blocks were checked.
pub fn check_report(blocks: &[Block], report: &str) -> Result<usize> {
    for (i, b) in blocks.iter().enumerate() {
        let begin = format!("GUIDE-BEGIN {i}\n");
        let start = report
            .find(&begin)
            .with_context(|| format!("{}: the guest did not run the block", b.place()))?
            + begin.len();
        let end_mark = format!("GUIDE-END {i} rc=");
        let end = report[start..]
            .find(&end_mark)
            .with_context(|| format!("{}: the block did not finish", b.place()))?
            + start;
        let printed = &report[start..end];
        let rc = report[end + end_mark.len()..]
            .lines()
            .next()
            .unwrap_or_default()
            .trim();
        if rc != "0" {
            bail!(
                "{}: the block failed in the guest (rc {rc}):\n{}--- it printed ---\n{printed}",
                b.place(),
                b.text
            );
        }
        if let Some(line) = b.expect.as_deref().and_then(|e| missing_line(e, printed)) {
            bail!(
                "{}: the block did not print {line:?} in the guest\n--- it printed ---\n{printed}",
                b.place()
            );
        }
    }
    Ok(blocks.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_tags_and_their_output() {
        let g = "# T\n```sh test\nimgmode images\n```\n\n```text\nimgmode-base:latest ... sha256:...\n```\n\n```sh\nimgmode disk x \\\n  --format qcow2 -o y\n# c\n```\n```sh vm=boot\nimgmode status\n```\n";
        let b = parse("t.md", g).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!((b[0].run_tag(), b[0].line), (Some("test"), 2));
        assert_eq!(
            b[0].expect.as_deref(),
            Some("imgmode-base:latest ... sha256:...\n")
        );
        assert_eq!(b[2].run_tag(), None);
        assert_eq!(
            commands(&b[2].text),
            ["imgmode disk x  --format qcow2 -o y"]
        );
        assert_eq!(b[3].run_tag(), Some("vm=boot"));
        // after prose, a text block is not the output
        let b = parse("t.md", "```sh test\nx\n```\nIt prints:\n```text\ny\n```\n").unwrap();
        assert_eq!(b[0].expect, None);
        assert!(parse("t.md", "```sh tset\nx\n```\n").is_err());
        assert!(parse("t.md", "```sh\nx\n").is_err());
    }

    #[test]
    fn a_guest_report_is_checked_block_by_block() {
        let b = parse(
            "g.md",
            "```sh vm=boot\nimgmode status\n```\n\n```text\n● ...\n```\n```sh vm=boot\ntrue\n```\n",
        )
        .unwrap();
        let blocks: Vec<Block> = b.into_iter().filter(|b| b.run_tag().is_some()).collect();
        let script = guest_script(&blocks);
        assert!(script.contains("( set -eu\nimgmode status\n)"), "{script}");
        let ok =
            "GUIDE-BEGIN 0\n● default:abc\nGUIDE-END 0 rc=0\nGUIDE-BEGIN 1\nGUIDE-END 1 rc=0\n";
        assert_eq!(check_report(&blocks, ok).unwrap(), 2);
        let e = check_report(&blocks, &ok.replace("● default", "default")).unwrap_err();
        assert!(e.to_string().contains("did not print \"● ...\""), "{e}");
        let e = check_report(&blocks, &ok.replace("1 rc=0", "1 rc=2")).unwrap_err();
        assert!(
            e.to_string()
                .contains("g.md:8: the block failed in the guest (rc 2)"),
            "{e}"
        );
        assert!(check_report(&blocks, "GUIDE-BEGIN 0\n").is_err());
    }

    #[test]
    fn output_lines_match_with_ellipses() {
        let out = "imgmode-base:latest   sha256:d9f2\nother\n";
        assert_eq!(
            missing_line("imgmode-base:latest ... sha256:...", out),
            None
        );
        assert_eq!(
            missing_line("sha256 ... imgmode-base", out).as_deref(),
            Some("sha256 ... imgmode-base")
        );
    }
}
