//! `cargo xtask tidy`: the architecture rules ARCHITECTURE.md states, checked on the source.
//!
//! - The crate graph (normal dependencies between workspace crates, from `cargo metadata`)
//!   equals the graph documented in ARCHITECTURE.md's `tidy:crate-graph` block.
//! - No import circle between the source files of a crate. An edge is a path (`use` or
//!   expression) from one file to an item of another; paths to a file's own ancestor modules
//!   (`super::`, the crate root) do not count: a module folder is one unit whose root
//!   re-exports its children and whose children share the root's types.
//! - `Command::new`, environment reads (`std::env`, `current_exe`) and `/proc` appear only in
//!   the files ARCHITECTURE.md's `tidy:allow` block names for each.
//! - No source file holds more than [`MAX_FILE_LINES`] lines of non-test code, and no non-test
//!   function is longer than [`MAX_FN_LINES`] lines.
//! - Every program started with `Run::new("…")` is in the tool table of
//!   `builder/support/src/cmd.rs`, so a missing tool always names its Debian package.
//!
//! Test code (`#[cfg(test)]` items, `tests/` directories) is exempt from all but the first
//! rule. The rules run as a unit test of xtask (so `cargo test --workspace`, and therefore CI,
//! fails when one breaks) and as `cargo xtask tidy`, which prints every violation.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use syn::visit::Visit;

/// Lines of non-test code a source file may hold.
pub const MAX_FILE_LINES: usize = 800;
/// Lines a non-test function may span.
pub const MAX_FN_LINES: usize = 120;

/// The crates whose source the file rules cover.
const SOURCE_ROOTS: &[&str] = &[
    "builder/support/src",
    "builder/image/src",
    "builder/os/src",
    "layering/src",
    "seed/src",
    "ibi/src",
    "recert/src",
    "testkit/src",
    "cli/src",
    "vmtest/src",
    "xtask/src",
    "xtask/deps/src",
    "fuzz/fuzz_targets",
];

/// What the rules found: the violations (one message each) and the longest non-test
/// function and file, for the record.
pub struct Report {
    pub violations: Vec<String>,
    /// (`path:line fn name`, lines)
    pub longest_fn: (String, usize),
    /// (path, lines of non-test code)
    pub longest_file: (String, usize),
}

/// Run every rule.
pub fn report(root: &Path) -> Result<Report> {
    let doc =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    let mut r = Report {
        violations: crate_graph(root, &doc)?,
        longest_fn: (String::new(), 0),
        longest_file: (String::new(), 0),
    };
    let allow = allow_list(&doc)?;
    let tools = tool_table(root)?;
    for src in SOURCE_ROOTS {
        let files = SourceFile::load_crate(root, src)?;
        r.violations.extend(circles(&files));
        for f in &files {
            r.violations.extend(f.rule_violations(&allow, &tools));
            for (name, line, len) in &f.functions {
                if *len > r.longest_fn.1 {
                    r.longest_fn = (format!("{}:{line} fn {name}", f.rel), *len);
                }
            }
            if f.code_lines() > r.longest_file.1 {
                r.longest_file = (f.rel.clone(), f.code_lines());
            }
        }
    }
    Ok(r)
}

/// `cargo xtask tidy`.
pub fn run(root: &Path) -> Result<()> {
    let r = report(root)?;
    let v = r.violations;
    println!(
        "tidy: longest non-test function {} ({} lines); largest file {} ({} lines of non-test code)",
        r.longest_fn.0, r.longest_fn.1, r.longest_file.0, r.longest_file.1
    );
    if v.is_empty() {
        println!("tidy: every rule holds");
        return Ok(());
    }
    for m in &v {
        eprintln!("tidy: {m}");
    }
    bail!("tidy: {} violation(s)", v.len())
}

/// The lines of the fenced block that follows `<!-- tidy:NAME -->` in ARCHITECTURE.md.
fn block<'a>(doc: &'a str, name: &str) -> Result<Vec<&'a str>> {
    let marker = format!("<!-- tidy:{name} -->");
    let after = doc
        .split_once(&marker)
        .with_context(|| format!("ARCHITECTURE.md has no {marker} block"))?
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```")
        .and_then(|b| b.split_once('\n'))
        .map(|(_, b)| b)
        .with_context(|| format!("{marker} must be followed by a fenced block"))?;
    let end = body.find("```").context("unterminated fenced block")?;
    Ok(body[..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect())
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Documented `crate -> dep, dep` lines.
fn documented_graph(doc: &str) -> Result<Graph> {
    let mut g = Graph::new();
    for line in block(doc, "crate-graph")? {
        let (from, to) = line
            .split_once("->")
            .with_context(|| format!("crate-graph line {line:?}: expected `crate -> deps`"))?;
        let deps = to
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        g.insert(from.trim().to_string(), deps.collect());
    }
    Ok(g)
}

/// Normal dependencies between workspace members, from `cargo metadata`.
fn actual_graph(root: &Path) -> Result<Graph> {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = m["packages"].as_array().context("no packages")?;
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut g = Graph::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let deps = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| members.contains(d))
            .map(str::to_string);
        g.insert(name, deps.collect());
    }
    Ok(g)
}

fn crate_graph(root: &Path, doc: &str) -> Result<Vec<String>> {
    graph_differences(&documented_graph(doc)?, &actual_graph(root)?)
}

fn graph_differences(doc: &Graph, actual: &Graph) -> Result<Vec<String>> {
    let mut v = vec![];
    for (name, deps) in actual {
        let Some(want) = doc.get(name) else {
            v.push(format!(
                "crate {name} is not in ARCHITECTURE.md's crate graph"
            ));
            continue;
        };
        for d in deps.difference(want) {
            v.push(format!(
                "crate {name} depends on {d}, which the documented crate graph does not allow"
            ));
        }
        for d in want.difference(deps) {
            v.push(format!(
                "the documented crate graph says {name} depends on {d}, but it does not"
            ));
        }
    }
    for name in doc.keys().filter(|n| !actual.contains_key(*n)) {
        v.push(format!(
            "ARCHITECTURE.md's crate graph names {name}, which is not a workspace crate"
        ));
    }
    Ok(v)
}

/// Pattern -> path prefixes where it may appear.
type AllowList = Vec<(String, Vec<String>)>;

fn allow_list(doc: &str) -> Result<AllowList> {
    let mut a = AllowList::new();
    for line in block(doc, "allow")? {
        let (pat, paths) = line
            .rsplit_once(": ")
            .with_context(|| format!("allow line {line:?}: expected `pattern: paths`"))?;
        let paths = paths.split(',').map(|p| p.trim().to_string()).collect();
        a.push((pat.trim().trim_matches('`').to_string(), paths));
    }
    Ok(a)
}

/// Programs named in `builder/support/src/cmd.rs`'s TOOLS table.
fn tool_table(root: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(root.join("builder/support/src/cmd.rs"))?;
    let table = text
        .split_once("pub const TOOLS")
        .and_then(|(_, t)| t.split_once("];"))
        .context("cmd.rs has no TOOLS table")?
        .0;
    Ok(table
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(\""))
        .filter_map(|l| l.split_once('"'))
        .map(|(t, _)| t.to_string())
        .collect())
}

/// One source file: where it is, its module path, and what its non-test code uses.
struct SourceFile {
    /// Relative to the workspace root.
    rel: String,
    /// Module path within its crate (`[]` for the crate root).
    module: Vec<String>,
    /// Non-test source lines (test items blanked out).
    code: Vec<String>,
    /// Module paths the file's non-test code names, resolved to absolute module paths.
    uses: BTreeSet<Vec<String>>,
    /// (name, first line, lines) of every non-test function.
    functions: Vec<(String, usize, usize)>,
}

impl SourceFile {
    fn load_crate(root: &Path, src: &str) -> Result<Vec<SourceFile>> {
        let mut files = vec![];
        let mut stack = vec![root.join(src)];
        while let Some(dir) = stack.pop() {
            for e in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(Self::load(root, src, &p)?);
                }
            }
        }
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(files)
    }

    fn load(root: &Path, src: &str, path: &Path) -> Result<SourceFile> {
        let rel = path.strip_prefix(root)?.display().to_string();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {rel}"))?;
        let module = module_path(path.strip_prefix(root.join(src))?);
        let mut c = Collector::default();
        for item in &ast.items {
            c.visit_item(item);
        }
        let mut code: Vec<String> = text.lines().map(str::to_string).collect();
        for (start, end) in &c.test_ranges {
            for l in &mut code[start - 1..*end] {
                l.clear();
            }
        }
        let uses = c
            .paths
            .iter()
            .filter_map(|p| resolve(p, &module, &c.children))
            .collect();
        Ok(SourceFile {
            rel,
            module,
            code,
            uses,
            functions: c.functions,
        })
    }

    /// Non-blank lines of non-test code.
    fn code_lines(&self) -> usize {
        self.code.iter().filter(|l| !l.trim().is_empty()).count()
    }

    fn rule_violations(&self, allow: &AllowList, tools: &BTreeSet<String>) -> Vec<String> {
        let mut v = vec![];
        let lines = self.code_lines();
        if lines > MAX_FILE_LINES {
            v.push(format!(
                "{} has {lines} lines of non-test code (at most {MAX_FILE_LINES}); split it by concern",
                self.rel
            ));
        }
        for (name, line, len) in &self.functions {
            if *len > MAX_FN_LINES {
                v.push(format!(
                    "{}:{line}: fn {name} is {len} lines long (at most {MAX_FN_LINES}); split it into named steps",
                    self.rel
                ));
            }
        }
        for (i, l) in self.code.iter().enumerate() {
            let code = l.split("//").next().unwrap_or_default();
            for (pat, paths) in allow {
                let allowed = paths.iter().any(|p| self.rel.starts_with(p.as_str()));
                if !allowed && code.contains(pat.as_str()) {
                    v.push(format!(
                        "{}:{}: `{pat}` is allowed only in {} (ARCHITECTURE.md, tidy:allow)",
                        self.rel,
                        i + 1,
                        paths.join(", ")
                    ));
                }
            }
            for prog in run_programs(code) {
                if !tools.contains(prog) {
                    v.push(format!(
                        "{}:{}: Run::new(\"{prog}\") names a program missing from cmd.rs's TOOLS table",
                        self.rel,
                        i + 1
                    ));
                }
            }
        }
        v
    }
}

/// Programs of `Run::new("…")` calls on a line.
fn run_programs(line: &str) -> Vec<&str> {
    line.match_indices("Run::new(\"")
        .filter_map(|(i, m)| line[i + m.len()..].split_once('"').map(|(p, _)| p))
        .collect()
}

/// `a/b.rs` -> [a, b]; `a/mod.rs` -> [a]; `lib.rs` -> [].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts
}

/// A path's target, absolute within the crate (`module` is the file's module, `children` the
/// modules it declares); `None` for paths outside the crate.
fn resolve(path: &[String], module: &[String], children: &[String]) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String>;
    let rest: &[String];
    match first.as_str() {
        "crate" => {
            base = vec![];
            rest = &path[1..];
        }
        "super" => {
            base = module.to_vec();
            let mut i = 0;
            while path.get(i).is_some_and(|s| s == "super") {
                base.pop();
                i += 1;
            }
            rest = &path[i..];
        }
        "self" => {
            base = module.to_vec();
            rest = &path[1..];
        }
        name if children.iter().any(|c| c == name) => {
            base = module.to_vec();
            rest = path;
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Find import circles among a crate's files.
fn circles(files: &[SourceFile]) -> Vec<String> {
    let by_module: BTreeMap<&[String], usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.module.as_slice(), i))
        .collect();
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); files.len()];
    for (i, f) in files.iter().enumerate() {
        for u in &f.uses {
            // the longest module prefix of the path that is a file
            let target = (0..=u.len())
                .rev()
                .find_map(|n| by_module.get(&u[..n]).copied());
            let Some(t) = target else { continue };
            let is_ancestor = f.module.starts_with(&files[t].module);
            if t != i && !is_ancestor {
                edges[i].insert(t);
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let names: Vec<&str> = c.iter().map(|&i| files[i].rel.as_str()).collect();
            format!("import circle between {}", names.join(" <-> "))
        })
        .collect()
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct T<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in t.edges[v].iter() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut c = vec![];
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                c.push(w);
                if w == v {
                    break;
                }
            }
            c.sort();
            t.out.push(c);
        }
    }
    let n = edges.len();
    let mut t = T {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: vec![],
        next: 0,
        out: vec![],
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Walks a file's items: test ranges, module declarations, paths, function lengths.
#[derive(Default)]
struct Collector {
    test_ranges: Vec<(usize, usize)>,
    children: Vec<String>,
    paths: Vec<Vec<String>>,
    functions: Vec<(String, usize, usize)>,
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        (a.path().is_ident("cfg") && a.to_token_stream_string().contains("test"))
            || a.path().is_ident("test")
    })
}

trait AttrText {
    fn to_token_stream_string(&self) -> String;
}

impl AttrText for syn::Attribute {
    fn to_token_stream_string(&self) -> String {
        match &self.meta {
            syn::Meta::List(l) => l.tokens.to_string(),
            _ => String::new(),
        }
    }
}

fn lines_of(s: proc_macro2::Span) -> (usize, usize) {
    (s.start().line, s.end().line)
}

fn flatten_use(prefix: &mut Vec<String>, tree: &syn::UseTree, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(prefix, &p.tree, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut p = prefix.clone();
            if n.ident != "self" {
                p.push(n.ident.to_string());
            }
            out.push(p);
        }
        syn::UseTree::Rename(r) => {
            let mut p = prefix.clone();
            p.push(r.ident.to_string());
            out.push(p);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(prefix, t, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => &[],
        };
        if is_test(attrs) {
            let (a, b) = lines_of(syn::spanned::Spanned::span(i));
            let first_attr = attrs
                .first()
                .map_or(a, |at| lines_of(syn::spanned::Spanned::span(at)).0);
            self.test_ranges.push((first_attr.min(a), b));
            return;
        }
        match i {
            syn::Item::Mod(m) if m.content.is_none() => self.children.push(m.ident.to_string()),
            syn::Item::Use(u) => flatten_use(&mut vec![], &u.tree, &mut self.paths),
            syn::Item::Fn(f) => {
                let (a, b) = lines_of(syn::spanned::Spanned::span(f));
                self.functions.push((f.sig.ident.to_string(), a, b - a + 1));
            }
            _ => {}
        }
        syn::visit::visit_item(self, i);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test(&f.attrs) {
            return;
        }
        let (a, b) = lines_of(syn::spanned::Spanned::span(f));
        self.functions.push((f.sig.ident.to_string(), a, b - a + 1));
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_architecture_rules_hold() {
        let v = report(&root()).unwrap().violations;
        assert!(v.is_empty(), "tidy violations:\n{}", v.join("\n"));
    }

    /// The rules catch what they are for: a forbidden `Command::new`, a circle, an edge the
    /// documented graph lacks, a long function, an unknown tool.
    #[test]
    fn violations_are_caught() {
        let td = tempfile::tempdir().unwrap();
        let src = td.path().join("ibi/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
        std::fs::write(
            src.join("a.rs"),
            "use crate::b::g;\npub fn f() { let _ = std::process::Command::new(\"x\"); g() }\n",
        )
        .unwrap();
        let long = "    let _ = 1;\n".repeat(MAX_FN_LINES);
        std::fs::write(
            src.join("b.rs"),
            format!("pub fn g() {{ crate::a::f();\n{long}}}\nfn h() {{ Run::new(\"nosuchtool\"); }}\n#[cfg(test)]\nmod tests {{ fn t() {{ std::process::Command::new(\"y\"); }} }}\n"),
        )
        .unwrap();
        let files = SourceFile::load_crate(td.path(), "ibi/src").unwrap();
        let c = circles(&files);
        assert_eq!(c, ["import circle between ibi/src/a.rs <-> ibi/src/b.rs"]);
        let allow =
            allow_list("<!-- tidy:allow -->\n```\nCommand::new: builder/support/src/cmd.rs\n```\n")
                .unwrap();
        let tools: BTreeSet<String> = ["sh".to_string()].into();
        let v: Vec<String> = files
            .iter()
            .flat_map(|f| f.rule_violations(&allow, &tools))
            .collect();
        assert!(
            v.iter().any(|m| m.starts_with(
                "ibi/src/a.rs:2: `Command::new` is allowed only in builder/support/src/cmd.rs"
            )),
            "{v:?}"
        );
        assert!(
            !v.iter()
                .any(|m| m.contains("b.rs") && m.contains("Command::new")),
            "test code is exempt: {v:?}"
        );
        assert!(
            v.iter().any(|m| m.contains("fn g is 122 lines long")),
            "{v:?}"
        );
        assert!(
            v.iter().any(|m| m.contains("Run::new(\"nosuchtool\")")),
            "{v:?}"
        );

        let doc = Graph::from([("imgmode-ibi".to_string(), BTreeSet::new())]);
        let actual = Graph::from([(
            "imgmode-ibi".to_string(),
            BTreeSet::from(["imgmode-vmtest".to_string()]),
        )]);
        let d = graph_differences(&doc, &actual).unwrap();
        assert_eq!(
            d,
            ["crate imgmode-ibi depends on imgmode-vmtest, which the documented crate graph does not allow"]
        );
    }
}
