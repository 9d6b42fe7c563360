//! docs/errors.md stays true. Each row of the catalogue names its message fragments (in
//! backticks, `…` for the variable parts), its exit status and the tests that provoke it. For
//! every row:
//!
//! - every named test exists, and its body asserts part of the row's message: one of its
//!   string literals of at least 8 characters is part of a piece of a fragment (the text
//!   between two `…`) or holds a whole piece, so a message changed in the code (its test fails) or in the catalogue
//!   (this test fails) is caught;
//! - where the status is a bare number, at least one named test asserts that status of the
//!   real binary: its body holds `Some(N)` (an `assert_eq!` of `status.code()`), or it runs
//!   the binary through a shared helper that asserts the exact code (see [`PINNING_HELPERS`]).

/// Helpers of the CLI tests that assert the exact exit status of every run they make (1 on
/// failure): the call, the file that defines it, and the function there that asserts it.
const PINNING_HELPERS: &[(&str, &str, &str)] = &[
    ("fails(", "cli/tests/bad_input.rs", "fails"),
    ("run(", "cli/tests/common/mod.rs", "run"),
    ("install(", "cli/tests/ibi_cli.rs", "install"),
    ("mirror(", "cli/tests/common/mod.rs", "mirror"),
    // a row of the bad-input table, whose runner compares every row's exact exit status
    ("row(", "cli/tests/bad_input_table.rs", "check"),
];

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The text of `fn name(` in `src` up to the closing brace at its indentation.
fn body<'a>(src: &'a str, name: &str) -> Option<&'a str> {
    let at = src.find(&format!("fn {name}("))?;
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &src[line_start..at];
    let indent: String = indent.chars().take_while(|c| c.is_whitespace()).collect();
    let close = format!("\n{indent}}}");
    let end = src[at..].find(&close)? + at + close.len();
    Some(&src[at..end])
}

/// The pieces of a row's message fragments that a test may assert.
fn pieces(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|frag| frag.split('…'))
        .map(|p| norm(p).to_string())
        .filter(|p| p.chars().count() >= 8)
        .collect()
}

/// Whether `body` calls the free function `call` (`name(`): not a method (`.name(`) nor a
/// longer name ending in it (`mirror_run(`).
fn calls(body: &str, call: &str) -> bool {
    body.match_indices(call).any(|(i, _)| {
        !body[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
    })
}

/// Text without the white space and punctuation around it.
fn norm(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ",;:()\"'.".contains(c))
}

/// The string literals of a test body (`"…"`, escapes undone), of at least 8 characters.
fn literals(body: &str) -> Vec<String> {
    let mut out = vec![];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut lit = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => lit.push('\n'),
                    Some(o) => lit.push(o),
                    None => break,
                },
                '"' => break,
                o => lit.push(o),
            }
        }
        if norm(&lit).chars().count() >= 8 {
            out.push(norm(&lit).to_string());
        }
    }
    out
}

struct Row<'a> {
    line: &'a str,
    message: &'a str,
    exit: &'a str,
    tests: Vec<(String, Vec<String>)>,
}

fn rows(doc: &str) -> Vec<Row<'_>> {
    doc.lines()
        .filter(|l| {
            l.split('|').count() >= 7
                && l.split('|')
                    .nth(1)
                    .is_some_and(|c| c.trim().parse::<u32>().is_ok())
        })
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            // `path` `fn`[, `fn`...] groups separated by ';'
            let tests = cells[5]
                .split(';')
                .map(|group| {
                    let names: Vec<String> = group
                        .split('`')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_string)
                        .collect();
                    let (path, fns) = names
                        .split_first()
                        .unwrap_or_else(|| panic!("{line}: a test group names no file"));
                    (path.clone(), fns.to_vec())
                })
                .collect();
            Row {
                line,
                message: cells[3],
                exit: cells[4].trim(),
                tests,
            }
        })
        .collect()
}

#[test]
fn every_row_is_provoked_by_its_tests_with_its_message_and_status() {
    let doc = std::fs::read_to_string(root().join("docs/errors.md")).unwrap();
    let rows = rows(&doc);
    assert!(rows.len() >= 25, "{} classes", rows.len());
    let mut problems = vec![];
    for row in &rows {
        let want = pieces(row.message);
        if want.is_empty() {
            problems.push(format!("{}: no message fragment of 8 characters", row.line));
            continue;
        }
        assert!(
            row.exit.starts_with('1') || row.exit == "2",
            "{}: exit {:?}",
            row.line,
            row.exit
        );
        let status: Option<u32> = row.exit.parse().ok();
        let mut status_pinned = false;
        for (path, fns) in &row.tests {
            let text = std::fs::read_to_string(root().join(path))
                .unwrap_or_else(|e| panic!("{}: {path}: {e}", row.line));
            for f in fns
                .iter()
                .filter(|f| !f.ends_with(".tar") && !f.ends_with(".gz"))
            {
                let Some(b) = body(&text, f) else {
                    problems.push(format!("{path} has no test {f}"));
                    continue;
                };
                let lits = literals(b);
                let matches = |l: &String| {
                    want.iter()
                        .any(|p| p.contains(l.as_str()) || l.contains(p.as_str()))
                };
                if !lits.iter().any(matches) {
                    problems.push(format!(
                        "{path} {f} asserts none of the row's message pieces {want:?}"
                    ));
                }
                if let Some(n) = status {
                    let cli = path.starts_with("cli/tests/");
                    let helper = PINNING_HELPERS
                        .iter()
                        .any(|(h, file, _)| path == file || cli && calls(b, h));
                    if cli && (b.contains(&format!("Some({n})")) || (n == 1 && helper)) {
                        status_pinned = true;
                    }
                }
            }
        }
        if let (Some(n), false) = (status, status_pinned) {
            problems.push(format!(
                "row {:?}: no named CLI test asserts exit status {n}",
                row.line.split('|').nth(2).unwrap_or_default().trim()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/errors.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_pinning_helpers_assert_the_exact_status() {
    for (_, file, name) in PINNING_HELPERS {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let b = body(&text, name).unwrap_or_else(|| panic!("{file} has no fn {name}"));
        assert!(
            b.contains("assert_exit(") || b.contains("Some(1)") || b.contains("Some(r.exit)"),
            "{file} {name} does not assert the exit status"
        );
    }
}

#[test]
fn pieces_and_bodies_are_read_as_documented() {
    assert_eq!(
        pieces("`disk size … is too small for this image: at least …`; `x`"),
        vec!["disk size", "is too small for this image: at least"]
    );
    let src = "fn a() {\n    x();\n}\n\nfn b() {\n    y();\n}\n";
    assert_eq!(body(src, "a"), Some("fn a() {\n    x();\n}"));
    assert!(calls("let (ok, _, e) = run(d, &[]);", "run("));
    assert!(!calls("cmd.run(); mirror_run(x);", "run("));
    assert_eq!(
        literals(r#"assert!(e.contains("say \"no\" here"), "{e}"); f("short")"#),
        vec!["say \"no\" here"]
    );
}
