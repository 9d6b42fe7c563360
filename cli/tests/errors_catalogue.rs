//! docs/errors.md stays true: at least 25 classes, each with an exit status and tests that
//! exist where the catalogue says.

#[test]
fn every_catalogued_test_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/errors.md")).unwrap();
    let rows: Vec<&str> = doc
        .lines()
        .filter(|l| {
            l.split('|').count() >= 7
                && l.split('|')
                    .nth(1)
                    .is_some_and(|c| c.trim().parse::<u32>().is_ok())
        })
        .collect();
    assert!(rows.len() >= 25, "{} classes", rows.len());
    let mut checked = 0;
    for row in &rows {
        let cells: Vec<&str> = row.split('|').collect();
        let (exit, tests) = (cells[4].trim(), cells[5]);
        assert!(exit.starts_with('1') || exit == "2", "{row}: exit {exit:?}");
        // `path` `fn`[, `fn`...] groups separated by ';'
        for group in tests.split(';') {
            let names: Vec<&str> = group.split('`').skip(1).step_by(2).collect();
            let (path, fns) = names
                .split_first()
                .unwrap_or_else(|| panic!("{row}: no test"));
            let text = std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|e| panic!("{row}: {path}: {e}"));
            for f in fns
                .iter()
                .filter(|f| !f.ends_with(".tar") && !f.ends_with(".gz"))
            {
                assert!(text.contains(&format!("fn {f}(")), "{path} has no test {f}");
                checked += 1;
            }
        }
    }
    assert!(
        checked >= rows.len(),
        "{checked} tests for {} classes",
        rows.len()
    );
}
